"""``covidcxr predict --engine ray``: the local engine's predictions, computed on a Ray cluster.

The pipeline is Ray Data's batch-inference pattern:

1. the driver lists the sources (:mod:`covidcxr.archive.sources`) and leaves out the files the
   output already holds (:class:`covidcxr.archive.store.ArchiveOutput`);
2. CPU tasks decode and resize each file with the local engine's own reader
   (:func:`covidcxr.inference.predict.read_resized`: same pixels, same failure reasons); a bad
   file becomes a row with its reason, never an error;
3. a pool of ``concurrency`` actors, each holding the classifier (loaded once on the driver, so
   workers need covidcxr installed but not the model's files), builds the local engine's rows
   (:func:`covidcxr.inference.predict.predict_rows`: lung focusing and the out-of-distribution
   check included) from batches of ``batch_size`` images, on a GPU when ``num_gpus`` > 0;
4. the driver streams the rows into the output folder as they come.

A worker that dies (a killed process, a lost node) costs nothing but time: Ray Data runs a
decoding task whose worker died again (``max_retries=-1``, its default), and restarts a dead
actor and resubmits its batches (``max_restarts=-1``, ``max_task_retries=-1``, its defaults for
actor pools). A driver that
dies loses at most the rows not yet written to a part; ``resume=True`` continues.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from covidcxr.inference.predict import PredictionResult

INSTALL_HINT = "pip install 'covidcxr[ray]'"
FILES_PER_BLOCK = 256
"""Files per block of the listing dataset: the unit Ray schedules and retries."""
DECODE_BATCH = 32
"""Files per call of the decoding task."""
DECODE_MEMORY = 256 * 2**20
"""Bytes of memory a decoding task reserves (Ray's ``memory`` resource)."""


class RayMissingError(ModuleNotFoundError):
    """Ray (with Ray Data) is not installed; the message says how to install it."""


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`RayMissingError` saying how to install it."""
    try:
        import pyarrow  # noqa: F401  (Ray Data's blocks, and the output tables)
        import ray
        import ray.data
    except ImportError as error:
        raise RayMissingError(
            f"--engine ray needs Ray Data, which is not installed ({error}); install it with "
            f"{INSTALL_HINT}",
            name="ray",
        ) from None
    return ray


def predict_on_ray(
    model: Any,
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    address: str | None = None,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int = 64,
    seg_model: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PredictionResult:
    """Predict every image the ``sources`` name with ``model``, on Ray; write ``out_dir``.

    Args:
        model: a pretrained model's name, a run or model folder, or a loaded
            :class:`covidcxr.inference.artifact.Classifier` (PyTorch; not ONNX).
        sources: image files, folders, and CSV / Parquet lists with a ``path`` column.
        out_dir: the output folder (:mod:`covidcxr.archive.store`: ``predictions.parquet``,
            ``predictions.csv``, ``failures.parquet``, ``failures.csv``).
        address: the cluster: ``"auto"`` (the one ``ray start`` began on this machine),
            ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` (Ray Client); None: ``$RAY_ADDRESS`` or a
            new local cluster on this machine's cores. Ignored when Ray is already initialised.
        concurrency: classifier actors (each loads the model once).
        num_cpus: CPUs each actor reserves (and PyTorch threads it runs).
        num_gpus: GPUs each actor reserves; fractions share one GPU (0.25: four actors).
        batch_size: images per forward pass (and per actor call).
        seg_model: lung segmenter for a classifier trained with ``--lungs``.
        resume: skip files already in ``out_dir`` and add the rest (same model only).
        force: replace an existing output.
        progress: called with ``(done, total)`` as rows arrive.
        warn: called with the model's warnings and when resumed rows match none of the inputs.

    Returns the local engine's :class:`~covidcxr.inference.predict.PredictionResult` (no rows
    kept; ``out`` is ``out_dir``). Raises :class:`RayMissingError` without Ray, ``ValueError`` /
    ``FileExistsError`` / ``FileNotFoundError`` for a bad model, source or output.
    """
    from covidcxr.archive.sources import iter_sources
    from covidcxr.archive.store import ArchiveOutput
    from covidcxr.inference.predict import check_identity, load_predictor, write_identity

    ray = require_ray()
    _check_resources(concurrency, num_cpus, num_gpus, batch_size)
    classifier = load_predictor(model, "torch")
    if seg_model is not None:
        classifier.use_segmenter(seg_model)
    if classifier.lung_mode != "none":
        classifier.segmenter  # noqa: B018  (fail now, and travel with the classifier)
    checked = classifier.reference is not None  # loaded here, so that it travels too
    if warn is not None:
        for message in classifier.card.warnings():
            warn(message)
    output = ArchiveOutput(out_dir, classifier.class_names, checked, resume=resume, force=force)
    identity = classifier.identity()
    check_identity(output.predictions, identity, resume, warn)
    write_identity(output.predictions, identity)

    listed = list(iter_sources(sources))
    order = {str(path): index for index, (path, _) in enumerate(listed)}
    files = [str(path) for path, reason in listed if reason is None]
    pending = [path for path in files if path not in output.done]
    result = PredictionResult(out=output.folder, skipped=len(files) - len(pending))
    result.failures = [(path, reason) for path, reason in listed if reason is not None]
    if output.done and not result.skipped and warn is not None:
        warn(
            f"none of the {len(output.done)} rows already in {output.folder} match these inputs; "
            "they are kept and every file is predicted"
        )
    if progress is not None:
        progress(result.skipped, len(files))
    if pending:
        with _connected(ray, address):
            _check_room_for_decoding(ray, concurrency * num_cpus, warn)
            dataset = _pipeline(
                ray, classifier, pending, concurrency, num_cpus, num_gpus, batch_size
            )
            unreadable = 0
            try:
                for rows, failed in _iter_results(dataset):
                    output.add(rows)
                    result.predicted += len(rows)
                    result.failures.extend(failed)
                    unreadable += len(failed)
                    if progress is not None:
                        progress(result.skipped + result.predicted + unreadable, len(files))
            except BaseException:
                output.flush()  # Ctrl-C, a lost cluster: keep what came back, for --resume
                raise
    output.finish(result.failures, order)
    result.failures.sort(key=lambda item: order.get(str(item[0]), len(order)))
    return result


def _check_resources(concurrency: int, num_cpus: float, num_gpus: float, batch_size: int) -> None:
    if concurrency < 1:
        raise ValueError(f"--concurrency should be at least 1 (actors), got {concurrency}")
    if num_cpus <= 0 or num_gpus < 0:
        raise ValueError(
            f"each actor needs num_cpus > 0 and num_gpus >= 0, got {num_cpus} and {num_gpus}"
        )
    if batch_size < 1:
        raise ValueError(f"--batch-size should be at least 1, got {batch_size}")


def _check_room_for_decoding(ray: Any, reserved: float, warn: Callable[[str], None] | None) -> None:
    """Warn when the actors would take every CPU the cluster has now: decoding tasks would
    then wait for ever (an autoscaling cluster may still add nodes, so this is no error)."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if reserved >= cpus and warn is not None:
        warn(
            f"the classifier actors reserve {reserved:g} of the cluster's {cpus:g} CPUs, which "
            "leaves none for decoding; lower --concurrency or --num-cpus unless nodes are on "
            "their way"
        )


@contextlib.contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Ray initialised for the block: an existing session as it is, else a connection to
    ``address`` (or a new local cluster) closed again at the end."""
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"address": address, "logging_level": "WARNING"}
    if address is None:
        options["include_dashboard"] = False
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()


def _pipeline(
    ray: Any,
    classifier: Any,
    files: list[str],
    concurrency: int,
    num_cpus: float,
    num_gpus: float,
    batch_size: int,
) -> Any:
    """The Ray dataset of result rows (:func:`_classify` schema) for ``files``."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller's ``progress`` shows it instead
    context.print_on_execution_start = False
    # Full-resolution images when the lungs are focused on first (the classifier resizes them
    # after cropping), else the network's input size, as in the local engine.
    size = None if classifier.lung_mode != "none" else classifier.card.input_size
    listing = ray.data.from_items(
        [{"path": path} for path in files],
        override_num_blocks=max(1, math.ceil(len(files) / FILES_PER_BLOCK)),
    )
    decoded = listing.map_batches(
        decode_batch,
        fn_kwargs={"size": size},
        batch_size=DECODE_BATCH,
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(),
        num_cpus=1,
        # Besides reserving room for a batch of films, a memory request keeps decoding in tasks
        # of its own: Ray Data fuses a task stage into the actor stage after it when their
        # resources are equal, and decoding would then run only on the actors' CPUs.
        memory=DECODE_MEMORY,
    )
    return decoded.map_batches(
        ClassifyBatch,
        fn_constructor_kwargs={
            "classifier": classifier,
            "batch_size": batch_size,
            "use_gpu": num_gpus > 0,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def _iter_results(dataset: Any) -> Iterator[tuple[list[dict[str, Any]], list[tuple[Path, str]]]]:
    """``(prediction rows, failures)`` of each batch of ``dataset`` as it is computed."""
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows, failed = [], []
        for record in batch.to_pylist():
            reason = record.pop(_REASON)
            if reason is None:
                rows.append(record)
            else:
                failed.append((Path(record["path"]), reason))
        yield rows, failed


# --- what runs on the workers ---------------------------------------------------------------

_REASON = "failure_reason"
"""Result column: why the file could not be read (null for a prediction)."""


def decode_batch(batch: Any, size: int | None) -> Any:
    """A ``pyarrow.Table`` of ``path`` -> ``path, pixels, height, width, failure_reason``:
    each file read as the local engine reads it, uint8 ``(size, size)`` or, when ``size`` is
    None, the float32 ``(H, W)`` image, as raw bytes; a bad file has null pixels and a reason."""
    import pyarrow as pa

    from covidcxr.inference.predict import read_resized

    columns: dict[str, list[Any]] = {
        "path": [],
        "pixels": [],
        "height": [],
        "width": [],
        _REASON: [],
    }
    for path in batch.column("path").to_pylist():
        image, reason = read_resized((Path(path), size))
        columns["path"].append(path)
        columns["pixels"].append(None if image is None else image.tobytes())
        columns["height"].append(0 if image is None else image.shape[0])
        columns["width"].append(0 if image is None else image.shape[1])
        columns[_REASON].append(reason)
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("pixels", pa.large_binary()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            (_REASON, pa.string()),
        ]
    )
    return pa.Table.from_pydict(columns, schema=schema)


class ClassifyBatch:
    """A Ray Data actor: the classifier, loaded once; each call turns a decoded batch
    (:func:`decode_batch`) into the local engine's rows plus a ``failure_reason`` column."""

    def __init__(self, classifier: Any, batch_size: int, use_gpu: bool) -> None:
        from covidcxr.archive.store import prediction_schema
        from covidcxr.perf import tune_allocator

        tune_allocator()
        if use_gpu:
            import torch

            if torch.cuda.is_available():
                classifier.network.to("cuda")
                if classifier.lung_mode != "none":
                    classifier.segmenter.network.to("cuda")
        self.classifier = classifier
        self.batch_size = batch_size
        checked = classifier.reference is not None
        self.schema = prediction_schema(classifier.class_names, checked)
        self.dtype = "float32" if classifier.lung_mode != "none" else "uint8"

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        from covidcxr.inference.predict import predict_rows

        good, failed = [], []
        for record in batch.to_pylist():
            if record[_REASON] is not None:
                failed.append({"path": record["path"], _REASON: record[_REASON]})
                continue
            shape = (record["height"], record["width"])
            image = np.frombuffer(record["pixels"], dtype=self.dtype).reshape(shape).copy()
            good.append((record["path"], image))
        names = self.classifier.class_names
        rows = predict_rows(self.classifier, good, names, self.batch_size)
        records = [{**row, _REASON: None} for row in rows] + failed
        schema = self.schema.append(pa.field(_REASON, pa.string()))
        return pa.Table.from_pylist(records, schema=schema)
