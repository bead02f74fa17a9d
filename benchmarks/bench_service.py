"""Requests/s and latency of ``covidcxr serve`` under concurrent clients on loopback.

    .venv/bin/python benchmarks/bench_service.py [--clients 16] [--duration 20] [--heatmap]
        [--model seed-cnn] [--image PATH]

Saves an untrained classifier (seeded weights, 3 classes; speed does not depend on the weights)
to a temporary folder, starts the real server on it (``python -m covidcxr serve MODEL --port
PORT`` on 127.0.0.1, a free port) and waits until ``GET /health`` answers 200 (the server warms
its model up first: ~10 s). Then ``--clients`` threads, each with its own ``httpx.Client``,
post one real X-ray as the multipart field ``file`` to ``/predict`` (``?heatmap=true`` with
``--heatmap``) back to back for ``--duration`` seconds. The X-ray is the first PNG of the real
sample (``../shared/data/real-sample``) unless ``--image`` names one.

Prints requests/s (completed requests over the wall time of the load), latency median, p90 and
p99 in ms as the clients see it (queueing included), the server's own median ``elapsed_ms``
(decoding, waiting for the model's lock, analysis), and the count of answers other than 200
(and of requests that got no answer). The server is terminated at the end, also on errors and
Ctrl-C. Clients and server share the machine's cores, so on a small machine the figures
understate the server. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "real-sample"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def first_xray(image: Path | None) -> Path:
    """``image``, or the first real-sample X-ray (not a mask)."""
    if image is not None:
        return image
    found = sorted(REAL_SAMPLE.rglob("images/*.png"))
    if not found:
        raise SystemExit(f"no X-ray under {REAL_SAMPLE}; pass one with --image")
    return found[0]


@contextmanager
def running_server(
    model: Path | str | None, port: int, log: Path, startup_timeout: float
) -> Iterator[tuple[str, int]]:
    """Start ``covidcxr serve [MODEL]`` on ``port`` (no model: the shipped defaults), yield its
    base URL and process id once ``/health`` answers 200, and stop it on the way out (SIGTERM,
    then SIGKILL after 10 s)."""
    model_argument = [] if model is None else [str(model)]
    command = [sys.executable, "-m", "covidcxr", "serve", *model_argument, "--host", HOST]
    with log.open("wb") as output:
        # Own session: a Ctrl-C in the terminal reaches this script, which stops the server.
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    try:
        started = time.perf_counter()
        while not healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}:\n{tail(log)}")
            if time.perf_counter() - started > startup_timeout:
                raise RuntimeError(f"no answer from {url}/health in {startup_timeout:g} s")
            time.sleep(0.25)
        print(f"server up on {url} after {time.perf_counter() - started:.1f} s (pid {server.pid})")
        yield url, server.pid
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Results:
    """What the clients saw; appended to from several threads under ``lock``."""

    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency_ms: float, status: int, server_ms: float | None) -> None:
        with self.lock:
            self.latencies_ms.append(latency_ms)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if server_ms is not None:
                self.server_ms.append(server_ms)

    def fail(self, error: Exception) -> None:
        with self.lock:
            kind = type(error).__name__
            self.failures[kind] = self.failures.get(kind, 0) + 1


@dataclass
class Window:
    """The load's time window (``time.perf_counter`` seconds), set once every client is ready."""

    duration: float
    start: float = float("inf")

    def open(self) -> None:
        self.start = time.perf_counter()

    @property
    def deadline(self) -> float:
        return self.start + self.duration


def client(
    url: str,
    upload: tuple[str, bytes, str],
    params: dict[str, str],
    ready: threading.Barrier,
    window: Window,
    stop: threading.Event,
    results: Results,
) -> None:
    """Post ``upload`` to ``/predict`` back to back until the window closes or ``stop``."""
    with httpx.Client(base_url=url, timeout=120.0) as http:
        ready.wait(timeout=60)
        while not stop.is_set() and time.perf_counter() < window.deadline:
            sent = time.perf_counter()
            try:
                response = http.post("/predict", params=params, files={"file": upload})
                latency_ms = 1000 * (time.perf_counter() - sent)
                server_ms = response.json().get("elapsed_ms") if response.is_success else None
            except (httpx.HTTPError, ValueError) as error:
                results.fail(error)
                continue
            results.record(latency_ms, response.status_code, server_ms)


def load(
    url: str, image: Path, clients: int, duration: float, heatmap: bool
) -> tuple[Results, float]:
    """Run ``clients`` threads for ``duration`` seconds; the results and the wall seconds from
    the start until the last thread returned."""
    upload = (image.name, image.read_bytes(), "image/png")
    params = {"heatmap": "true"} if heatmap else {}
    results = Results()
    stop = threading.Event()
    window = Window(duration)
    ready = threading.Barrier(clients, action=window.open)
    threads = [
        threading.Thread(
            target=client,
            args=(url, upload, params, ready, window, stop, results),
            name=f"client-{index}",
            daemon=True,
        )
        for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        stop.set()
    return results, time.perf_counter() - window.start


def report(results: Results, wall: float, clients: int) -> None:
    latencies = np.asarray(results.latencies_ms)
    answered = len(latencies)
    not_ok = answered - results.statuses.get(200, 0)
    print(f"{answered} answers in {wall:.1f} s with {clients} clients: {answered / wall:.1f} req/s")
    if answered:
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        print(f"latency (client side): p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms")
    if results.server_ms:
        print(f"server's own elapsed_ms: median {np.median(results.server_ms):.1f} ms")
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(results.statuses.items()))
    print(f"non-200 answers: {not_ok} (statuses {statuses or 'none'})")
    if results.failures:
        failed = ", ".join(f"{kind}: {count}" for kind, count in results.failures.items())
        print(f"requests without an answer: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--heatmap", action="store_true", help="ask for Grad-CAM (?heatmap=true)")
    parser.add_argument("--model", default="seed-cnn", help="the classifier to serve")
    parser.add_argument("--image", type=Path, help="the X-ray to post (default: real sample)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument(
        "--startup-timeout", type=float, default=120.0, help="seconds to wait for /health"
    )
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0:
        parser.error("--clients and --duration should be positive")

    image = first_xray(args.image)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.model}, "
        f"{args.clients} clients, {args.duration:g} s, heatmap={args.heatmap}, "
        f"posting {image.name} ({image.stat().st_size / 1024:.0f} KiB)"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        from covidcxr.inference.artifact import save_untrained

        model = save_untrained(root / "model", args.model)
        port = args.port or free_port()
        try:
            with running_server(model, port, root / "server.log", args.startup_timeout) as (url, _):
                results, wall = load(url, image, args.clients, args.duration, args.heatmap)
        except KeyboardInterrupt:
            print("interrupted: server stopped")
            raise SystemExit(130) from None
    report(results, wall, args.clients)


if __name__ == "__main__":
    main()
