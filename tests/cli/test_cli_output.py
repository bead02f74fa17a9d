"""What the command line prints into a log file: plain lines, no third-party chatter, no
traceback at exit, the exit codes scripts rely on (README, "Exit codes")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from covidcxr.data.phantoms import write_phantoms
from helpers import real_images

COVIDCXR = [sys.executable, "-m", "covidcxr"]
CHATTER = ("GPU available", "TPU available", "litlogger", "LeafSpec", "Tip:", "Trainer.fit")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real console command with stdout and stderr going to pipes, as into a log file."""
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [*COVIDCXR, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("output-phantoms") / "data"
    write_phantoms(root, per_class=10, seed=21)
    return root


def test_training_into_a_log_file_is_a_line_per_epoch(phantoms: Path, tmp_path: Path) -> None:
    result = run(
        "train", "--data", str(phantoms), "--model", "tiny-cnn", "--out", str(tmp_path / "run"),
        "--epochs", "3", "--batch-size", "8", "--accelerator", "cpu", "--workers", "0",
        "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    epochs = [line for line in both.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"], both
    assert "\r" not in both and "\x1b" not in both, repr(both[-400:])
    assert not [word for word in CHATTER if word in both], both
    assert "Traceback" not in both


def test_quiet_training_still_shows_each_epoch(phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidcxr.cli import app

    result = CliRunner().invoke(
        app,
        ["train", "--data", str(phantoms), "--model", "tiny-cnn", "--out", str(tmp_path / "q"),
         "--epochs", "2", "--accelerator", "cpu", "--workers", "0",
         "--cache-dir", str(tmp_path / "cache"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch   1/2" in result.output and "epoch   2/2" in result.output


def test_the_library_trains_without_lightning_chatter(phantoms: Path, tmp_path: Path) -> None:
    script = (
        "import covidcxr\n"
        "from covidcxr.training.config import TrainConfig\n"
        f"covidcxr.train(TrainConfig(data={str(phantoms)!r}, model='tiny-cnn', "
        f"out={str(tmp_path / 'api')!r}, max_epochs=1, accelerator='cpu', decode_workers=0, "
        f"cache_dir={str(tmp_path / 'cache')!r}))\n"
        "import logging\n"
        "print('level', logging.getLogger('lightning.pytorch').level)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    assert not [word for word in CHATTER if word in both], both
    assert "level 20" in result.stdout  # Lightning's own level is given back afterwards


def test_a_failed_training_leaves_no_run_folder(tmp_path: Path) -> None:
    empty = tmp_path / "nodata"
    empty.mkdir()
    result = run("train", "--data", str(empty), "--out", str(tmp_path / "t3"), "--quiet")
    assert result.returncode == 2 and "error:" in result.stderr, result.stderr
    assert not (tmp_path / "t3").exists()
    missing = run("train", "--out", str(tmp_path / "t4"))
    assert missing.returncode == 2 and "--data is required" in missing.stderr, missing.stderr
    assert not (tmp_path / "t4").exists()


def test_predict_exit_codes(tmp_path: Path, real_dataset: Path) -> None:
    films = real_images(real_dataset, 2)
    text = tmp_path / "notes.txt"
    text.write_text("not an X-ray\n")
    good = run("predict", "seed-cnn-db", *map(str, films))
    assert good.returncode == 0, good.stderr
    assert len(good.stdout.strip().splitlines()) == 2
    some = run("predict", "seed-cnn-db", str(films[0]), str(text))
    assert some.returncode == 1, some.stderr
    assert "1 file skipped" in some.stderr and "notes.txt" in some.stderr
    none = run("predict", "seed-cnn-db", str(tmp_path / "missing.png"), str(text))
    assert none.returncode == 3 and "no input could be read" in none.stderr, none.stderr
    usage = run("predict", str(tmp_path / "no-such-model"), str(films[0]))
    assert usage.returncode == 2 and "error:" in usage.stderr
    for result in (good, some, none, usage):
        assert "Traceback" not in result.stderr and "Bad file descriptor" not in result.stderr


def test_predict_with_worker_processes_exits_cleanly(tmp_path: Path, real_dataset: Path) -> None:
    # the decoding pool is joined before exit: no "OSError: [Errno 9] Bad file descriptor"
    # from concurrent.futures at interpreter exit (3 runs in 12 printed it before)
    folder = tmp_path / "films"
    folder.mkdir()
    for index, film in enumerate(real_images(real_dataset, 6)):
        (folder / f"{index}{film.suffix}").write_bytes(film.read_bytes())
    for _ in range(2):
        result = run("predict", "seed-cnn-db", str(folder), "--workers", "2", "--quiet")
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr


def test_serve_says_nothing_of_serving_when_it_cannot(tmp_path: Path) -> None:
    nope = run("serve", str(tmp_path / "nope"))
    assert nope.returncode == 2 and "serving" not in nope.stdout + nope.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = run("serve", "seed-cnn-db", "--port", str(port))
    assert busy.returncode == 2, busy.stderr
    assert "another program uses the port" in busy.stderr and "serving" not in busy.stdout
