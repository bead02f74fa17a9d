"""The memory bound on decoded images: a byte budget reserved before decoding.

A 35 KB PNG can declare 5,990 × 5,990 pixels; decoded and analysed it takes over a gigabyte.
The service therefore reads each upload's size from its header (:func:`declared_pixels`, which
decodes nothing) and reserves what its analysis will take from a :class:`MemoryBudget` before
decoding it (see ``ServiceSettings.decode_budget_mb``). For the bound to hold in resident
memory, freed buffers must go back to the OS: :func:`unmap_large_buffers` and
:func:`return_freed_memory` ask glibc to do so.
"""

from __future__ import annotations

import ctypes
import io
import threading
import warnings
from collections import deque


class MemoryBudget:
    """A counting semaphore of bytes, first come first served.

    :meth:`acquire` waits until ``amount`` bytes are free *and* every earlier caller has been
    served, so one large image is not starved by a stream of small ones. ``in_use`` is what is
    reserved now, ``peak`` the most ever reserved at once (never above ``total``).
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"a memory budget should be at least 1 byte, got {total}")
        self.total = total
        self.in_use = 0
        self.peak = 0
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()

    def acquire(self, amount: int, timeout: float | None = None) -> bool:
        """Reserve ``amount`` bytes, waiting up to ``timeout`` seconds (None: no limit).
        False when the time ran out; ValueError when ``amount`` exceeds the whole budget."""
        if not 0 <= amount <= self.total:
            raise ValueError(
                f"cannot reserve {amount:,} bytes of a {self.total:,}-byte memory budget"
            )
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                granted = self._changed.wait_for(
                    lambda: self._waiting[0] is ticket and self.in_use + amount <= self.total,
                    timeout,
                )
                if granted:
                    self.in_use += amount
                    self.peak = max(self.peak, self.in_use)
                return granted
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()  # the next in line may fit now

    def release(self, amount: int) -> None:
        """Give back ``amount`` bytes reserved by :meth:`acquire`."""
        with self._changed:
            if amount > self.in_use:
                raise ValueError(f"releasing {amount:,} bytes, but only {self.in_use:,} are held")
            self.in_use -= amount
            self._changed.notify_all()


def declared_pixels(data: bytes, kind: str) -> int | None:
    """How many pixel values the image in ``data`` (a ``"PNG"``, ``"JPEG"`` or ``"DICOM"``
    file) declares, read from its header without decoding any: width × height, times the
    samples per pixel for DICOM. None when the header cannot be read (the decoder then says
    what is wrong)."""
    try:
        if kind == "DICOM":
            import pydicom

            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            samples = int(header.get("SamplesPerPixel", 1) or 1)
            return int(header.Rows) * int(header.Columns) * max(1, samples)
        from PIL import Image

        with warnings.catch_warnings():
            # Pillow's decompression-bomb warning: the decoder's own size check answers that.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:  # reads the header, decodes nothing
                width, height = image.size
        return width * height
    except Exception:  # any unreadable header: the decoder reports it properly (422)
        return None


#: Allocations of this size or more get a memory map of their own, unmapped when freed (with
#: :func:`unmap_large_buffers`).
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def unmap_large_buffers() -> bool:
    """Have glibc give every buffer of :data:`MMAP_THRESHOLD_BYTES` or more its own memory map
    and unmap it when it is freed (``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc from
    raising that threshold as it goes). Without it the buffers of a huge image, freed on one
    worker thread, stay in that thread's heap while the next image fills another's: a burst of
    four 5,990 × 5,990 uploads, analysed one at a time, peaked at 2.9 GB and left 2.0 GB
    resident; with it, 2.1 GB and 1.2 GB (idle: 1.0 GB). Process-wide, so
    :func:`~covidcxr.service.app.serve` calls it. False where there is no glibc."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    except (OSError, AttributeError):
        return False


def return_freed_memory() -> bool:
    """Ask glibc to give the memory it holds free back to the OS (``malloc_trim``); False
    where there is no glibc (musl, macOS)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
