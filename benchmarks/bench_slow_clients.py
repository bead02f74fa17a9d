"""Slow clients against the real ``covidcxr serve``: do trickled uploads shut others out?

    .venv/bin/python benchmarks/bench_slow_clients.py [--model NAME_OR_FOLDER] [--tricklers 40]
        [--slow-headers 10] [--seconds 30] [--probe-every 2] [--image PATH]

The hostile test of issue 12, as a script: starts the real server (``python -m covidcxr serve``,
default limits, a free port on 127.0.0.1; no ``--model``: the shipped defaults), then opens
``--tricklers`` connections that send a ``POST /predict`` with a 1 MB ``Content-Length`` and
then one body byte per second, and ``--slow-headers`` connections that send their request line
and headers one byte per second. While they run, a normal client posts a real X-ray every
``--probe-every`` seconds for ``--seconds`` seconds. Prints the probes' status codes and times,
how long the server let each kind of slow client stay, and how many lines of the server's log
are tracebacks. Not a test: nothing is asserted; figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from bench_service import HOST, first_xray, free_port, running_server


def trickle(
    port: int, head: bytes, slow: bytes, stop: threading.Event, lasted: list[float]
) -> None:
    """Send ``head`` at once, then ``slow`` one byte a second (zeros once it runs out) until the
    server answers or closes the connection, or ``stop``; record how long that took."""
    started = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=5) as connection:
            connection.sendall(head)
            connection.settimeout(1.0)  # one byte per second: recv waits the second
            position = 0
            while not stop.is_set():
                byte = slow[position : position + 1] or b"\x00"
                position += 1
                try:
                    connection.sendall(byte)
                    connection.recv(4096)  # returns only on an answer (408) or a close
                    break
                except TimeoutError:
                    continue
                except OSError:
                    break
    finally:
        lasted.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tricklers", type=int, default=40)
    parser.add_argument("--slow-headers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--probe-every", type=float, default=2.0)
    parser.add_argument("--image", type=Path, default=None)
    args = parser.parse_args()

    image = first_xray(args.image)
    port = free_port()
    body_head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: image/png\r\n"
        "Content-Length: 1048576\r\n\r\n"
    ).encode()
    header_only = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Slow: ".encode() + b"a" * 600
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with running_server(args.model, port, log, startup_timeout=120) as (url, _):
            stop = threading.Event()
            body_lasted: list[float] = []
            header_lasted: list[float] = []
            threads = []
            for _ in range(args.tricklers):
                threads.append(
                    threading.Thread(
                        target=trickle, args=(port, body_head, b"", stop, body_lasted), daemon=True
                    )
                )
            for _ in range(args.slow_headers):
                threads.append(
                    threading.Thread(
                        target=trickle,
                        args=(port, b"", header_only, stop, header_lasted),
                        daemon=True,
                    )
                )
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            probes: list[tuple[int, float]] = []
            started = time.perf_counter()
            with httpx.Client(timeout=60.0) as client:
                while time.perf_counter() - started < args.seconds:
                    began = time.perf_counter()
                    with image.open("rb") as handle:
                        answer = client.post(
                            f"{url}/predict", files={"file": (image.name, handle, "image/png")}
                        )
                    probes.append((answer.status_code, time.perf_counter() - began))
                    time.sleep(max(0.0, args.probe_every - (time.perf_counter() - began)))
            stop.set()
            for thread in threads:
                thread.join(timeout=5)
        text = log.read_text(errors="replace")
    codes = Counter(code for code, _ in probes)
    print(
        f"{args.tricklers} body tricklers and {args.slow_headers} slow-header clients for "
        f"{args.seconds:g} s; {len(probes)} probe uploads of {image.name}:"
    )
    print(f"  probe status codes: {dict(codes)}")
    print(f"  probe seconds: median {statistics.median(t for _, t in probes):.2f}, max "
          f"{max(t for _, t in probes):.2f}")  # fmt: skip
    for name, lasted in (("body tricklers", body_lasted), ("slow headers", header_lasted)):
        if lasted:
            print(
                f"  {name}: dropped by the server after median {statistics.median(lasted):.1f} s "
                f"(max {max(lasted):.1f} s), {len(lasted)} of them"
            )
    print(f"  server log: {text.count('Traceback')} tracebacks, {len(text.splitlines())} lines")


if __name__ == "__main__":
    main()
