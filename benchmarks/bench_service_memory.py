"""Resident memory of ``covidcxr serve``: idle after start-up, and under a burst of huge images.

    .venv/bin/python benchmarks/bench_service_memory.py [--model NAME_OR_FOLDER] [--burst 32]
        [--side 5990]

Starts the real server (``python -m covidcxr serve [MODEL] --port PORT`` on 127.0.0.1, a free
port; with no ``--model`` the shipped default classifier and lung model, as a plain
``covidcxr serve`` does), waits until ``GET /health`` answers 200, lets it settle for 2 s, and
prints its ``VmRSS`` (``/proc/PID/status``). Then ``--burst`` clients post at once one small
PNG that decodes to ``--side`` × ``--side`` pixels (zeros compress to a few tens of KB) with
``?heatmap=true&lungs=true``, and the script prints the server's peak resident memory over the
burst (``VmHWM``), its ``VmRSS`` ``--settle`` seconds afterwards (work abandoned with a 504 may
still be running when the last answer arrives) and the answers' status codes. ``--burst 0``
skips the burst. Not a test: nothing is asserted; figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench_service import free_port, running_server  # the same start, wait and stop


def memory_mb(pid: int, field: str) -> float:
    """``field`` (``VmRSS``, ``VmHWM``...) of process ``pid`` in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def huge_png(side: int) -> bytes:
    """A PNG of ``side`` × ``side`` black pixels: a few tens of KB that decode to side² bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="classifier name or folder (default: the shipped one)")
    parser.add_argument("--burst", type=int, default=32, help="concurrent huge uploads (0: none)")
    parser.add_argument("--side", type=int, default=5990, help="side of the huge PNG in pixels")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before VmRSS after")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "server.log"
        with running_server(args.model, free_port(), log, args.startup_timeout) as (url, pid):
            time.sleep(2.0)
            print(f"idle VmRSS {memory_mb(pid, 'VmRSS'):.0f} MB")
            if args.burst:
                data = huge_png(args.side)
                params = {"heatmap": "true", "lungs": "true"}

                def post(_: int) -> int:
                    files = {"file": ("huge.png", data, "image/png")}
                    try:
                        response = httpx.post(
                            f"{url}/predict", params=params, files=files, timeout=600.0
                        )
                    except httpx.HTTPError as error:
                        return -1 if "timed out" not in str(error) else -2
                    return response.status_code

                with ThreadPoolExecutor(max_workers=args.burst) as pool:
                    statuses = Counter(pool.map(post, range(args.burst)))
                time.sleep(args.settle)
                print(
                    f"burst of {args.burst} × {len(data) / 1e3:.0f} KB PNG decoding to "
                    f"{args.side}×{args.side}: peak VmHWM {memory_mb(pid, 'VmHWM'):.0f} MB, "
                    f"VmRSS {args.settle:g} s after {memory_mb(pid, 'VmRSS'):.0f} MB; "
                    f"answers {dict(sorted(statuses.items()))}"
                )


if __name__ == "__main__":
    main()
