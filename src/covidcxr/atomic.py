"""Files that are replaced whole or not at all.

Every file covidcxr writes that a reader, a resumed run or a second process may open while it is
being written (settings, splits, histories, model cards, weights, prediction identities) goes
through :func:`replacing`: the bytes go to a hidden temporary beside the target
(``.NAME.XXXXXXXX.partial``, which dataset discovery skips), are flushed to disk, and then take the
target's place in one ``os.replace``. A kill at any moment leaves the old file or the new one,
never half of one. Checkpoints (:class:`covidcxr.training.callbacks.AtomicModelCheckpoint`) and
ONNX exports (several files committed together once checked) use the same temporary names.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(path: str | Path) -> Path:
    """The temporary that stands in for ``path`` while it is written: ``.NAME.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s new content to; when the block ends without
    an error the temporary is flushed to disk and moved over ``path``; on an error it is removed
    and ``path`` is left as it was. Creates ``path``'s folder. The temporary's name is unique
    (``.NAME.XXXXXXXX.partial``), so two processes writing one file (the ranks of a
    multi-device run) never write into each other's; the last to finish wins, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(descriptor)
    partial = Path(name)
    try:
        os.chmod(partial, 0o666 & ~_UMASK)  # mkstemp makes it private (0600)
        yield partial
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process's umask, read once at import. Linux shows it in /proc/self/status; elsewhere
    it can only be read by setting it, and setting it while another thread creates a file
    would give that file the wrong mode, hence once, at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns the path."""
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with replacing(path) as partial:
        partial.write_bytes(data)
    return Path(path)
