"""``train(config) -> RunResult``: one engine for every classifier (Lightning underneath).

A run folder (``config.out``) ends up holding::

    config.yaml            the resolved settings (repeat the run with --config config.yaml)
    splits.csv             the split used (reused on --resume and by extra processes)
    history.csv            one row per epoch: train/val loss and accuracy, images/s
    checkpoints/last.ckpt  written atomically after every epoch (--resume continues from it)
    checkpoints/best.ckpt  lowest validation loss so far (its weights are restored at the end)
    metrics.json           test accuracy, per-class precision / recall / specificity / F1, AUC
    curves.png             accuracy and loss, train vs validation
    confusion_matrix.png   test confusion matrix, counts and row-normalised (+ .csv)
    model/                 the self-describing saved model (see covidcxr.inference.artifact)
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from covidcxr.training.config import TrainConfig, resolve
from covidcxr.training.config import save_yaml as save_config
from covidcxr.training.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    ProgressFactory,
    RunResult,
    launch_rank,
)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_factory: ProgressFactory = lambda _: None,
    log: Callable[[str], None] = print,
) -> RunResult | None:
    """Train ``config.model`` on ``config.data``; returns the result on rank 0 (None on the other
    processes of a multi-device run). ``resume`` continues the run in ``config.out`` from its
    last checkpoint (pass the settings saved in its ``config.yaml``; a larger ``max_epochs``
    extends the run)."""
    from covidcxr.perf import tune_allocator

    started = time.perf_counter()
    tune_allocator()
    config = resolve(config)
    run_dir = Path(config.out)
    last_checkpoint = run_dir / CHECKPOINT_DIR / "last.ckpt"
    rank = launch_rank()
    if resume:
        saved = run_dir / CONFIG_FILE
        if not saved.is_file() or not last_checkpoint.is_file():
            raise FileNotFoundError(
                f"{run_dir}: nothing to resume (needs {CONFIG_FILE} and "
                f"{CHECKPOINT_DIR}/last.ckpt from an earlier `covidcxr train --out {run_dir}`)"
            )
        log(f"Resuming {run_dir} from {last_checkpoint}")
    elif (
        rank == 0
        and (run_dir / CHECKPOINT_DIR).is_dir()
        and any((run_dir / CHECKPOINT_DIR).iterdir())
    ):
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    with _removed_if_nothing_trained(run_dir, active=rank == 0 and not resume), quiet_lightning():
        if rank == 0:
            save_config(config, run_dir / CONFIG_FILE)
        return _fit(
            config, run_dir, resume, last_checkpoint, started, callbacks, progress_factory, log
        )


def _fit(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    last_checkpoint: Path,
    started: float,
    callbacks: Sequence[Any],
    progress_factory: ProgressFactory,
    log: Callable[[str], None],
) -> RunResult | None:
    """Set up the task, fit, restore the best weights, score and save (see :func:`train`)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

    from covidcxr.models import get_model_spec
    from covidcxr.training.callbacks import (
        AtomicModelCheckpoint,
        EpochHistory,
        EpochLines,
        EpochSeeding,
        PlateauSchedule,
    )
    from covidcxr.training.classification import setup_classification
    from covidcxr.training.module import PLATEAU_FACTOR, PLATEAU_PATIENCE
    from covidcxr.training.segmentation import setup_segmentation

    pl.seed_everything(config.seed, workers=True, verbose=False)
    spec = get_model_spec(config.model)
    setup = setup_segmentation if spec.task == "segmentation" else setup_classification
    job = setup(config, spec, run_dir, progress_factory, log)
    history = EpochHistory(run_dir / "history.csv", score=job.module.score_name)
    checkpoint = AtomicModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    # Lightning's save_last writes last.ckpt only in epochs that improve the monitored loss;
    # this one writes it after every epoch, so a resume loses at most the epoch in progress.
    last = AtomicModelCheckpoint(
        after_last=[history.write],
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    all_callbacks = [
        EarlyStopping(monitor="val_loss", mode="min", patience=int(config.patience)),
        checkpoint,
        last,
        EpochSeeding(config.seed),
        history,
        *callbacks,
    ]
    if job.module.lr_schedule == "plateau":
        all_callbacks.append(PlateauSchedule(PLATEAU_FACTOR, PLATEAU_PATIENCE))
    bars = not config.quiet and _is_terminal()
    if bars:
        all_callbacks.append(TQDMProgressBar())
    else:  # a quiet run, or output into a file (SLURM): a plain line per epoch
        all_callbacks.append(EpochLines(history, log))
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        callbacks=all_callbacks,
        logger=False,
        default_root_dir=run_dir,
        deterministic="warn",
        enable_progress_bar=bars,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # (a frozen trunk stays in eval mode on purpose, so BatchNorm statistics do not move: the
    # warning about it is among LIGHTNING_WARNINGS)
    trainer.fit(job.module, *job.loaders, ckpt_path=last_checkpoint if resume else None)
    if not trainer.is_global_zero:
        return None

    best_path = checkpoint.best_model_path
    if best_path and Path(best_path).is_file():  # restore the best epoch's weights
        state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
        job.module.load_state_dict(state)
    job.module.to("cpu")
    job.network.to(memory_format=torch.contiguous_format)
    metrics = job.finish(history.rows)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["processes"] = trainer.world_size  # devices × nodes that trained together
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if history.rows:
        from covidcxr.analysis.plots import plot_training_curves

        plot_training_curves(history.rows, run_dir / "curves.png", job.module.score_name)
    log(job.summary(metrics))
    return RunResult(run_dir, run_dir / "model", metrics, history.rows)


#: What Lightning says that a covidcxr run says better or not at all: its hardware banner ("GPU
#: available: False..."), tips and adverts, and a deprecation inside Lightning itself.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
LIGHTNING_WARNINGS = (r".*LeafSpec.*", r".*module\(s\) in eval mode.*")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO chatter and its own deprecation warnings off while a run trains; the
    loggers' levels are put back afterwards. Warnings that concern the user's run stay."""
    import logging

    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels: import first)

    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in LIGHTNING_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _is_terminal() -> bool:
    """Whether progress bars have a terminal to draw on (Lightning's bars go to stderr)."""
    import sys

    return sys.stderr is not None and sys.stderr.isatty()


@contextmanager
def _removed_if_nothing_trained(run_dir: Path, active: bool) -> Iterator[None]:
    """A failure before the first checkpoint (no data, a bad setting, unreadable weights...)
    leaves no half-written run behind: what this run wrote into ``run_dir`` goes, and so does
    ``run_dir`` itself if the run made it. Once a checkpoint exists the run is resumable and
    stays. ``active`` is False on resume and on the extra processes of a multi-device run."""
    if not active:
        yield
        return
    existed = run_dir.exists()
    before = set(run_dir.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        checkpoints = run_dir / CHECKPOINT_DIR
        if not (checkpoints.is_dir() and any(checkpoints.iterdir())):
            for entry in set(run_dir.iterdir()) - before if run_dir.is_dir() else ():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
