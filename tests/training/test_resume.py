"""A run killed anywhere (a real process, ``kill -9`` semantics) and resumed in a fresh process
ends with exactly the weights and history of an uninterrupted one: after an epoch, in the middle
of one, and in the middle of writing its checkpoint. The paper's CNN has dropout and the run
augments and lowers its learning rate on plateaus, so every source of randomness and every
piece of state is exercised."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from covidcxr.data.phantoms import write_phantoms

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import lightning.pytorch as pl
    from covidcxr.training.config import TrainConfig
    from covidcxr.training.train import train
    import covidcxr.training.callbacks as callbacks

    where, data, out, cache = sys.argv[1:5]

    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if where == "after-epoch" and trainer.current_epoch == 2:
                os._exit(9)

        def on_train_batch_start(self, trainer, module, batch, index):
            if where == "mid-epoch" and trainer.current_epoch == 2 and index == 1:
                os._exit(9)

    if where == "mid-write":  # the third last.ckpt is written, not yet renamed into place
        real, seen = os.replace, []

        def replace(source, target):
            if str(target).endswith("last.ckpt"):
                seen.append(target)
                if len(seen) == 3:
                    os._exit(9)
            return real(source, target)

        callbacks.os.replace = replace

    config = TrainConfig(
        data=data, model="seed-cnn", out=out, max_epochs=4, patience=10, quiet=True,
        augment=True, cache_dir=cache, accelerator="cpu", decode_workers=0, batch_size=16,
        lr_schedule="plateau", learning_rate=0.01,
    )
    train(config, resume=where == "resume", callbacks=[Kill()], log=lambda _: None)
    """
)


def run(script: Path, where: str, data: Path, out: Path, cache: Path) -> int:
    environment = os.environ | {"PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, str(script), where, str(data), str(out), str(cache)],
        capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip
    if done.returncode not in (0, 9):
        raise AssertionError(f"{where} run failed:\n{done.stderr[-3000:]}")
    return done.returncode


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as handle:
        return [
            {k: v for k, v in row.items() if "second" not in k} for row in csv.DictReader(handle)
        ]


@pytest.mark.slow
def test_killed_anywhere_and_resumed_in_a_new_process_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_phantoms(data, per_class=24, seed=5)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    whole = tmp_path / "whole"
    assert run(script, "whole", data, whole, cache) == 0
    expected = load_file(str(whole / "model" / "model.safetensors"))
    for where in ("after-epoch", "mid-epoch", "mid-write"):
        broken = tmp_path / where
        assert run(script, where, data, broken, cache) == 9, f"{where}: the kill never came"
        # what says an epoch is done never runs ahead of the checkpoint that holds it
        saved = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=False)
        assert len(history(broken)) <= saved["epoch"] + 1
        assert not (broken / "metrics.json").exists()
        assert run(script, "resume", data, broken, cache) == 0
        assert history(broken) == history(whole), where
        got = load_file(str(broken / "model" / "model.safetensors"))
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), f"{where}: {name} differs"
