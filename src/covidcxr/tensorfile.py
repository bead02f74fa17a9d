"""Safetensors files that are the same bytes for the same tensors, written atomically.

``safetensors.torch.save_file`` lays the data out deterministically, but the JSON header that
names the tensors and the metadata comes out of a hash map, so two saves of identical weights
can differ in their header's key order and hash differently. :func:`save_tensors` rewrites the
header canonically (keys sorted, no spaces, padded with spaces to a multiple of 8 bytes as the
format asks), so a file's SHA-256 (:func:`file_digest`) identifies its weights: prediction files
record it, and ``--resume`` refuses to mix two models' rows.

The file format (safetensors' own specification): an unsigned little-endian 64-bit header
length N, N bytes of JSON, then the tensors' bytes; the header's ``data_offsets`` count from
the end of the header, so re-serialising the header leaves the data untouched.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from covidcxr.atomic import write_bytes

_ALIGN = 8


def canonical_bytes(data: bytes) -> bytes:
    """``data`` (a whole safetensors file) with its header re-serialised canonically."""
    if len(data) < 8:
        raise ValueError(f"not a safetensors file: {len(data)} bytes, shorter than its header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError(
            f"not a safetensors file: its header claims {length} bytes, the file has "
            f"{len(data) - 8} after the length"
        )
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def save_tensors(
    path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` (name -> contiguous CPU torch tensor) and string ``metadata`` to
    ``path``, canonically (see the module docstring) and atomically (a hidden partial file,
    then a rename), readable by everyone the folder allows (mode 0644)."""
    from safetensors.torch import save

    path = Path(path)
    return write_bytes(path, canonical_bytes(save(dict(tensors), metadata=dict(metadata or {}))))


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of ``path``'s canonical bytes: the same for the same tensors and
    metadata, whichever safetensors writer saved them."""
    return hashlib.sha256(canonical_bytes(Path(path).read_bytes())).hexdigest()
