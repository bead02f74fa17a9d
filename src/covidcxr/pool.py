"""Worker processes that die with the process that started them, and the one way covidcxr
spreads work over them (:func:`parallel_map`, sized by :func:`default_workers`).

A ``ProcessPoolExecutor`` worker waits on its call queue forever: when its parent is killed
(``kill -9``, or ``SIGTERM``, whose default action ends Python without cleanup) the workers
stay, each holding its memory (a decoder worker ~300 MB) and every file the parent had open.
:func:`process_pool` gives each worker a daemon thread that watches its parent's process id and
ends the worker within :data:`WATCH_INTERVAL` seconds of the parent's death (an orphan is
re-parented, so its ``getppid()`` changes). A thread, not Linux's ``PR_SET_PDEATHSIG``, because
that signal fires when the parent *thread* that started the worker ends, which may be long
before the process does, and because it works on every POSIX system.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WATCH_INTERVAL = 0.5
"""Seconds between two looks at the parent; a worker outlives its parent by at most this."""


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``max_workers`` processes that end when this process does,
    however it ends."""
    return ProcessPoolExecutor(
        max_workers=max_workers, initializer=_watch_parent, initargs=(os.getpid(),)
    )


def _watch_parent(owner: int) -> None:
    """Worker initializer. ``owner`` is the process that made the pool; the worker's parent is
    that process (fork) or a fork server that ends with it (forkserver, spawn)."""
    if os.getppid() != owner and not _alive(owner):  # it died before this worker got here
        os._exit(1)
    parent = os.getppid()
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(1)  # no cleanup: the parent that would collect results is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def default_workers() -> int:
    """Processes used for decoding: all cores this process may use, at most 8."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def parallel_map(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunksize: int = 16,
) -> Iterator[Result]:
    """``map(function, items)`` over ``workers`` processes (0 or 1: in this process), in order,
    calling ``progress(done, total)`` as results arrive. ``function`` must be picklable."""
    workers = default_workers() if workers is None else workers
    total = len(items)
    results: Iterable[Result]
    if workers <= 1 or total < 2 * chunksize:
        results = map(function, items)
        executor = None
    else:
        executor = process_pool(workers)
        results = executor.map(function, items, chunksize=chunksize)
    try:
        for done, result in enumerate(results, start=1):
            if progress is not None:
                progress(done, total)
            yield result
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
