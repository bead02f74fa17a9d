"""A real Ray cluster for the archive tests: ``ray start --head`` on loopback with 2 CPUs, which
the tests reach by address, as ``covidcxr predict --engine ray --address HOST:PORT`` reaches a
cluster: the driver (the test process) joins a cluster it did not start, and the workers are
children of that cluster's raylet, not of the driver. The cluster uses Ray's token
authentication with a token made for the session (``RAY_AUTH_TOKEN``, also given to the test
process), so it neither reads nor writes ``~/.ray/auth_token``.

Without Ray the tests that need it are skipped, saying how to install it, unless ``CI=true``:
there they must run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archive.ray_helpers import ray_or_skip

START_TIMEOUT = 60.0
THREADS_TIMEOUT = 20.0
"""Seconds the threads the Ray driver leaves behind get to end after these tests."""


@pytest.fixture(autouse=True, scope="module")
def no_driver_threads_left() -> Iterator[None]:
    """Threads that Ray (its Data usage reporter and the like) starts in the test process may
    outlive ``ray.shutdown``; the tests that run after these must not share the process with
    them (CPython 3.11 corrupts ``ast.parse`` when two threads build ASTs at once: ONNX export
    once failed with "AST constructor recursion depth mismatch"). Join them here."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREADS_TIMEOUT
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``(address, pid)`` of a head node started for these tests (``ray start --block``, so
    that ending that one process ends the cluster without touching any other on the machine)."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in auth.items():  # before Ray is imported: it reads them once
            patch.setenv(name, value)
        ray_or_skip()
        yield from _head_node(tmp_path_factory.mktemp("ray"))


def _head_node(temp: Path) -> Iterator[tuple[str, int]]:
    executable = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert executable is not None, f"no `ray` command beside {sys.executable}"
    port = _free_port()
    command = [
        executable, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
        "--disable-usage-stats", f"--temp-dir={temp}",
    ]  # fmt: skip
    log = (temp / "ray-start.log").open("w")
    # No graceful drain at the end (30 s by default): nothing of the cluster outlives the tests.
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    head = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        _wait_for_port(port, head, temp / "ray-start.log")
        yield f"127.0.0.1:{port}", head.pid
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ends the head's processes
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, head: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"ray start did not listen on port {port} in {START_TIMEOUT:.0f} s")
