"""Worker processes end with the process that started them, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import real_images, save_untrained

POOL_SCRIPT = textwrap.dedent(
    """
    import time
    from covidcxr.pool import process_pool

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    if __name__ == "__main__":
        pool = process_pool(2)
        futures = [pool.submit(nap, 600) for _ in range(2)]
        print("started", flush=True)
        time.sleep(600)
    """
)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(child) for child in text}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's record is left


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def kill_and_check(process: subprocess.Popen, workers: set[int], how: int) -> None:
    os.kill(process.pid, how)
    process.wait(timeout=30)
    assert wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10), (
        f"workers {sorted(p for p in workers if alive(p))} outlived their parent"
    )


pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_die_with_their_parent(tmp_path: Path, how: int) -> None:
    script = tmp_path / "pool_script.py"
    script.write_text(POOL_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert process.stdout.readline().strip() == "started"
        assert wait_for(lambda: len(children(process.pid)) >= 2, timeout=30)
        kill_and_check(process, children(process.pid), how)
    finally:
        process.kill()


def test_predict_decoders_die_when_predict_is_killed(tmp_path: Path, real_dataset: Path) -> None:
    model = save_untrained(tmp_path / "model")
    archive = tmp_path / "archive"
    archive.mkdir()
    sources = real_images(real_dataset, 8)
    for index in range(3000):  # enough to keep predict busy well past the kill
        (archive / f"x{index:05d}.png").symlink_to(sources[index % len(sources)].resolve())
    process = subprocess.Popen(
        [sys.executable, "-m", "covidcxr", "predict", str(model), str(archive),
         "--out", str(tmp_path / "p.csv"), "--workers", "2", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(children(process.pid)) >= 2, timeout=120)
        kill_and_check(process, children(process.pid), signal.SIGKILL)
    finally:
        process.kill()
