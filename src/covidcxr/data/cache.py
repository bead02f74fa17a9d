"""Decode and resize each image once, into a compact uint8 store on disk.

Training at 100×100 or 224×224 would otherwise decode all 21,165 PNGs of the database every epoch.
:class:`ImageCache` keeps the resized pixels in one SQLite file, keyed by the file's identity
(resolved path, size, modification time) and the target (kind, height, width):

>>> cache = ImageCache()                                          # doctest: +SKIP
>>> batch = cache.get_many(paths, size=(100, 100))                # doctest: +SKIP
>>> batch.array.shape, batch.array.dtype                          # doctest: +SKIP
((21165, 100, 100), dtype('uint8'))

A second pass over the same files only ``stat()``s them. A file whose size or modification time
changed is decoded again. Pixels go through :mod:`covidcxr.io` and
:mod:`covidcxr.data.transforms`, so a cached image equals a direct
``resize_image(read_image(path), size)``.

Concurrency: any number of processes may read at once (WAL mode), writers wait for each other (busy
timeout). Each process opens its own connection on first use, so an ``ImageCache`` can be handed
to forked or spawned DataLoader workers. Rows are committed per chunk of decoded files: a killed
run keeps what it finished and never leaves a corrupt database.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covidcxr import io as image_io
from covidcxr.data.transforms import _check_size, resize_image, resize_mask
from covidcxr.pool import default_workers, process_pool

__all__ = ["CACHE_FORMAT_VERSION", "CacheBatch", "CacheStats", "ImageCache", "default_cache_dir"]

#: Stored with every row; rows of another version are misses and get overwritten. Bump it whenever
#: what a row holds changes: the decode convention of covidcxr.io, resize_image / resize_mask, or
#: the mask encoding.
CACHE_FORMAT_VERSION = 1

KINDS = ("image", "mask")
DB_FILENAME = "images.sqlite3"

# Keys per SELECT: well under SQLite's bound-parameter limit (999 before 3.32).
_SELECT_CHUNK = 500
# Files per worker task and per insert transaction (capped so every worker gets work).
_DECODE_CHUNK = 64
# Writers wait this long for another process's transaction instead of failing.
_BUSY_TIMEOUT_S = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    file_size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL,
    pixels BLOB NOT NULL,
    PRIMARY KEY (path, kind, height, width)
)
"""

# Connections opened by a parent process and inherited through fork. SQLite must not use them in
# the child, and closing them there could disturb the parent's locks, so they are kept alive here
# and never touched again.
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


def default_cache_dir() -> Path:
    """``$COVIDCXR_CACHE_DIR``, else ``$XDG_CACHE_HOME/covidcxr``, else ``~/.cache/covidcxr``.

    Empty variables count as unset.
    """
    explicit = os.environ.get("COVIDCXR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "covidcxr"
    return Path.home() / ".cache" / "covidcxr"


@dataclass(frozen=True)
class CacheBatch:
    """Pixels of a list of files, in the order asked for.

    ``array``: ``(N, height, width)`` uint8. Images are ``round(x * 255)`` of
    :func:`~covidcxr.data.transforms.resize_image`; masks are 0 / 1, so ``array.view(bool)`` turns
    them into bool masks without a copy. Rows of failed files are all zero.
    ``ok``: ``(N,)`` bool, False where the file could not be read.
    ``failures``: ``(path as given, error message)`` for each failed file, in input order.
    ``hits`` / ``misses``: files served from the cache / decoded now (failures count as misses).
    """

    array: np.ndarray
    ok: np.ndarray
    failures: list[tuple[Path, str]] = field(default_factory=list)
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True)
class CacheStats:
    """``entries`` rows; ``payload_bytes`` of pixels in them; ``disk_bytes`` of the database files
    (main file plus write-ahead log)."""

    entries: int
    payload_bytes: int
    disk_bytes: int


@dataclass(frozen=True)
class _FileKey:
    path: str
    file_size: int
    mtime_ns: int


class ImageCache:
    """Resized uint8 images and masks in one SQLite file under ``cache_dir``.

    Args:
        cache_dir: directory of the database (created on first use); default
            :func:`default_cache_dir`, read when the cache is constructed.
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        )
        self.db_path = self.cache_dir / DB_FILENAME
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"ImageCache({str(self.cache_dir)!r})"

    # Picklable for spawned DataLoader workers: connections are per process and never travel.
    def __getstate__(self) -> dict:
        return {"cache_dir": self.cache_dir, "db_path": self.db_path}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Reading

    def get_many(
        self,
        paths: Sequence[Path],
        size: tuple[int, int],
        kind: str = "image",
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CacheBatch:
        """Resized pixels of ``paths``, decoding and storing the files not cached yet.

        Args:
            paths: image (or mask) files; relative paths are taken from the working directory.
            size: target ``(height, width)``.
            kind: ``"image"`` (:func:`covidcxr.io.read_image` + ``resize_image``) or ``"mask"``
                (:func:`covidcxr.io.read_mask` + ``resize_mask``).
            workers: processes decoding the misses; default :func:`covidcxr.pool.default_workers`;
            ``0``
                decodes in this process.
            progress: called as ``progress(done, total)`` with ``total = len(paths)``: once after
                the lookup (``done`` = hits and missing files), after each decoded file, and
                always with ``done == total`` at the end.

        Returns:
            A :class:`CacheBatch`. Files that cannot be read (missing, a broken link, a FIFO or
            device, a name that is not UTF-8, empty, not an image, corrupt, NaN pixels) never
            raise: they are listed in ``failures`` and the others carry on. Failures are not
            cached; they are tried again next time.
        """
        height, width = _check_target(size, kind)
        workers = _resolve_workers(workers)
        total = len(paths)
        array = np.zeros((total, height, width), dtype=np.uint8)
        ok = np.zeros(total, dtype=bool)
        errors: dict[int, str] = {}

        # Rows of the same file (a path may be listed twice) share one key.
        indices_of: dict[_FileKey, list[int]] = {}
        directories: dict[str, str] = {}
        for index, path in enumerate(paths):
            if not image_io.is_utf8_path(path):  # SQLite keys are UTF-8 text
                errors[index] = f"{image_io.escape_path(path)}: {image_io.NOT_UTF8_REASON}"
                continue
            try:
                key = _identify(path, directories)
            except OSError as error:
                errors[index] = image_io.failure_reason(error, path)
            else:
                indices_of.setdefault(key, []).append(index)

        hits = 0
        # Rows go straight into the array, so a warm pass never holds the pixels twice.
        for key, pixels in self._lookup(list(indices_of), kind, height, width):
            indices = indices_of.pop(key)
            array[indices] = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width)
            ok[indices] = True
            hits += len(indices)
        pending = indices_of  # what is left: not cached, or cached for an older identity

        done = total - sum(len(indices) for indices in pending.values())
        if progress is not None and pending:
            progress(done, total)
        for key, pixels, error in self._decode(list(pending), kind, (height, width), workers):
            indices = pending[key]
            if pixels is None:
                for index in indices:
                    errors[index] = error
            else:
                array[indices] = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width)
                ok[indices] = True
            done += len(indices)
            if progress is not None:
                progress(done, total)
        if progress is not None and not pending:
            progress(total, total)

        failures = [(Path(paths[index]), errors[index]) for index in sorted(errors)]
        return CacheBatch(array=array, ok=ok, failures=failures, hits=hits, misses=total - hits)

    def get(self, path: Path, size: tuple[int, int], kind: str = "image") -> np.ndarray:
        """Resized pixels of one file, ``(height, width)`` uint8 as in :class:`CacheBatch`.

        Unlike :meth:`get_many` this raises for a bad file: ``FileNotFoundError`` when missing,
        :class:`covidcxr.io.ImageReadError` when unreadable.
        """
        height, width = _check_target(size, kind)
        key = _identify(path, {})
        pixels = next((found for _, found in self._lookup([key], kind, height, width)), None)
        if pixels is None:
            pixels = _decode_file(key.path, kind, (height, width))
            self._store([(key, pixels)], kind, height, width)
        return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width).copy()

    # ----------------------------------------------------------------------------------------
    # Maintenance

    def stats(self) -> CacheStats:
        """How many rows the cache holds and how much space they take."""
        entries, payload = (
            self._connection()
            .execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(pixels)), 0) FROM entries")
            .fetchone()
        )
        disk = sum(
            candidate.stat().st_size
            for candidate in (self.db_path, self.db_path.with_name(DB_FILENAME + "-wal"))
            if candidate.exists()
        )
        return CacheStats(entries=entries, payload_bytes=payload, disk_bytes=disk)

    def prune(self) -> int:
        """Delete rows that can no longer hit: their file is gone or changed, or they are of
        another format version. Returns how many rows were deleted.

        Rows are otherwise kept forever; a changed file's row is only replaced when that file is
        asked for again at the same size.
        """
        connection = self._connection()
        rows = connection.execute(
            "SELECT rowid, path, file_size, mtime_ns, version FROM entries"
        ).fetchall()
        current: dict[str, tuple[int, int] | None] = {}
        stale: list[int] = []
        for rowid, path, file_size, mtime_ns, version in rows:
            if path not in current:
                try:
                    info = os.stat(path)
                    current[path] = (info.st_size, info.st_mtime_ns)
                except OSError:
                    current[path] = None
            if version != CACHE_FORMAT_VERSION or current[path] != (file_size, mtime_ns):
                stale.append(rowid)
        with _write_transaction(connection):
            connection.executemany("DELETE FROM entries WHERE rowid = ?", [(r,) for r in stale])
        return len(stale)

    def clear(self) -> None:
        """Delete every row and give the space back to the file system."""
        connection = self._connection()
        with _write_transaction(connection):
            connection.execute("DELETE FROM entries")
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close this thread's connection (a later call reopens one)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local.connection = None

    # ----------------------------------------------------------------------------------------
    # Internals

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is not None:
            if local.pid == os.getpid():
                return connection
            _INHERITED_CONNECTIONS.append(connection)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; writes use _write_transaction.
        connection = sqlite3.connect(
            self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
        )
        # WAL: readers never block and are never blocked; a killed writer leaves the database
        # intact. NORMAL sync is safe in WAL mode (a power cut may lose the last commits, which
        # only costs re-decoding them).
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(_SCHEMA)
        local.connection, local.pid = connection, os.getpid()
        return connection

    def _lookup(
        self, keys: Sequence[_FileKey], kind: str, height: int, width: int
    ) -> Iterator[tuple[_FileKey, bytes]]:
        """Yield ``(key, pixels)`` for the ``keys`` stored with the same size, mtime and format
        version. A path listed under two identities (the file changed between two of this
        call's stat()s) can only match the last one; the other is then decoded."""
        by_path = {key.path: key for key in keys}
        paths = list(by_path)
        expected_length = height * width
        connection = self._connection()
        for start in range(0, len(paths), _SELECT_CHUNK):
            chunk = paths[start : start + _SELECT_CHUNK]
            placeholders = ",".join("?" * len(chunk))
            rows = connection.execute(
                "SELECT path, file_size, mtime_ns, pixels FROM entries "
                "WHERE kind = ? AND height = ? AND width = ? AND version = ? "
                f"AND path IN ({placeholders})",
                (kind, height, width, CACHE_FORMAT_VERSION, *chunk),
            ).fetchall()
            for path, file_size, mtime_ns, pixels in rows:
                key = by_path[path]
                if (
                    key.file_size == file_size
                    and key.mtime_ns == mtime_ns
                    and len(pixels) == expected_length
                ):
                    yield key, pixels

    def _store(
        self, decoded: Sequence[tuple[_FileKey, bytes]], kind: str, height: int, width: int
    ) -> None:
        """Insert (or replace stale) rows in one transaction."""
        if not decoded:
            return
        connection = self._connection()
        with _write_transaction(connection):
            connection.executemany(
                "INSERT OR REPLACE INTO entries "
                "(path, kind, height, width, file_size, mtime_ns, version, pixels) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        key.path,
                        kind,
                        height,
                        width,
                        key.file_size,
                        key.mtime_ns,
                        CACHE_FORMAT_VERSION,
                        pixels,
                    )
                    for key, pixels in decoded
                ],
            )

    def _decode(
        self, keys: list[_FileKey], kind: str, size: tuple[int, int], workers: int
    ) -> Iterator[tuple[_FileKey, bytes | None, str]]:
        """Decode ``keys``, store each chunk as it finishes, and yield ``(key, pixels, error)``
        per file, ``pixels`` None when the file could not be read.

        A file rewritten between its stat() and its decode is stored under the old identity; the
        next call sees the new identity, misses, and decodes it again.
        """
        if not keys:
            return
        height, width = size
        if workers == 0:
            for start in range(0, len(keys), _DECODE_CHUNK):
                chunk = keys[start : start + _DECODE_CHUNK]
                results = _decode_chunk([key.path for key in chunk], kind, size)
                yield from self._store_results(chunk, results, kind, height, width)
            return

        # Several chunks per worker so that the last ones finish together, but no chunk so small
        # that inter-process traffic and transactions dominate.
        chunk_size = max(1, min(_DECODE_CHUNK, math.ceil(len(keys) / (4 * workers))))
        chunks = [keys[start : start + chunk_size] for start in range(0, len(keys), chunk_size)]
        # multiprocessing's default start method: fork on Linux (cheap, and what DataLoader uses);
        # under spawn / forkserver (macOS, Windows, Python >= 3.14) the calling script needs the
        # usual `if __name__ == "__main__":` guard.
        with process_pool(min(workers, len(chunks))) as executor:
            futures = {
                executor.submit(_decode_chunk, [key.path for key in chunk], kind, size): chunk
                for chunk in chunks
            }
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        chunk = futures.pop(future)
                        results = future.result()
                        yield from self._store_results(chunk, results, kind, height, width)
            finally:
                # Stops queued chunks on an error or when the caller stops iterating.
                for future in futures:
                    future.cancel()

    def _store_results(
        self,
        chunk: list[_FileKey],
        results: list[tuple[bytes | None, str]],
        kind: str,
        height: int,
        width: int,
    ) -> Iterator[tuple[_FileKey, bytes | None, str]]:
        self._store(
            [
                (key, pixels)
                for key, (pixels, _) in zip(chunk, results, strict=True)
                if pixels is not None
            ],
            kind,
            height,
            width,
        )
        for key, (pixels, error) in zip(chunk, results, strict=True):
            yield key, pixels, error


# --------------------------------------------------------------------------------------------
# Decoding (module level so that worker processes can unpickle it)


def _decode_file(path: str, kind: str, size: tuple[int, int]) -> bytes:
    # Attribute access at call time, so that tests can monkeypatch covidcxr.io's readers.
    if kind == "image":
        return resize_image(image_io.read_image(path), size).tobytes()
    return resize_mask(image_io.read_mask(path), size).view(np.uint8).tobytes()


def _decode_chunk(
    paths: list[str], kind: str, size: tuple[int, int]
) -> list[tuple[bytes | None, str]]:
    results: list[tuple[bytes | None, str]] = []
    for path in paths:
        try:
            results.append((_decode_file(path, kind, size), ""))
        # A batch never dies on one file: whatever a reader raises for it (ImageReadError,
        # OSError, or a decoder's own exception) is reported for that file.
        except Exception as error:
            results.append((None, image_io.failure_reason(error, path)))
    return results


# --------------------------------------------------------------------------------------------
# Helpers


def _identify(path: Path | str, directories: dict[str, str]) -> _FileKey:
    """Resolved absolute path, size and mtime of ``path``; raises OSError if it cannot be stat()ed.

    Resolving a whole path costs ~40 µs (one lstat per component), more than the rest of a cache
    hit, so each directory is resolved once per call (``directories`` remembers them) and only the
    file itself is lstat()ed.
    """
    raw = os.fspath(path)
    directory, name = os.path.split(raw)
    if name in ("", ".", ".."):
        resolved = os.path.realpath(raw)
        info = os.stat(resolved)
    else:
        info = os.lstat(raw)
        if stat.S_ISLNK(info.st_mode):
            resolved = os.path.realpath(raw)
            info = os.stat(resolved)
        else:
            real_directory = directories.get(directory)
            if real_directory is None:
                real_directory = directories[directory] = os.path.realpath(directory)
            resolved = os.path.join(real_directory, name)
    return _FileKey(path=resolved, file_size=info.st_size, mtime_ns=info.st_mtime_ns)


@contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, rolled back on any exception (KeyboardInterrupt included).

    IMMEDIATE takes the write lock up front, waiting up to the busy timeout for other writers,
    instead of failing later when a read transaction would have to be upgraded.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _check_target(size: tuple[int, int], kind: str) -> tuple[int, int]:
    if kind not in KINDS:
        raise ValueError(f"kind should be one of {KINDS}, got {kind!r}")
    return _check_size(size)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:  # the one default of every pool (covidcxr.pool.default_workers)
        return default_workers()
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers should be an int >= 0 (0 = in this process), got {workers!r}")
    return workers
