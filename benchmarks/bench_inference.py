"""Inference speed on the CPU: PyTorch eager vs ONNX Runtime, for seed-cnn and efficientnet-lite0.

    .venv/bin/python benchmarks/bench_inference.py [--models seed-cnn efficientnet-lite0]
        [--repeats N] [--batch 32] [--threads N] [--image PATH] [--quick]

For each model an untrained classifier (seeded weights, 3 classes; timing does not depend on
the weights) is saved to a temporary folder as ``covidcxr train`` writes one, exported with
:func:`covidcxr.inference.export.export_onnx`, and loaded twice:
:func:`covidcxr.inference.artifact.load_model` (PyTorch eager) and
:func:`covidcxr.inference.export.load_onnx` (ONNX Runtime). Timed for both:

* batch 1, ``predict_prepared`` on a uint8 ``(1, 1, S, S)`` image (normalisation, network,
  softmax): median and p90 latency of ``--repeats`` calls after 20 warm-up calls (default 200
  calls for seed-cnn at 100×100, 50 for efficientnet-lite0 at 224×224);
* batch 1 end to end, ``predict_proba([image])`` on a decoded float X-ray (resize included): the
  first real-sample X-ray, or ``--image``, or a synthetic 1024×1024 image when neither exists;
* throughput at ``--batch`` images per ``predict_prepared`` call (median of ``--batch-runs``);
* the speed-up ORT / eager, and one more eager variant: ``torch.inference_mode`` with network
  and input in ``channels_last`` (the library's eager path uses contiguous NCHW).

Targets printed beside the figures: batch-1 latency <= 2 ms (seed-cnn) and <= 25 ms
(efficientnet-lite0) per image; ONNX Runtime >= 1.3× eager. torch runs on as many threads as
the process may use cores (``os.sched_getaffinity``; ``--threads`` changes it), ONNX Runtime
with its default, after :func:`covidcxr.perf.tune_allocator` as the CLI does. When
other processes keep a core busy, torch's threads wait for each other at every layer and eager
latency jumps by up to ~100 ms a call: compare with ``--threads 1``. ``--quick`` is a smoke run
(at most 20 timed calls, 3 warm-up); its figures are noisy. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from covidcxr.inference.artifact import Classifier, load_model, save_untrained
from covidcxr.inference.batched import normalise
from covidcxr.inference.export import export_onnx, load_onnx
from covidcxr.perf import tune_allocator

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "real-sample"
MODELS = ("seed-cnn", "efficientnet-lite0")
#: Batch-1 latency targets per image, in milliseconds.
TARGET_MS = {"seed-cnn": 2.0, "efficientnet-lite0": 25.0}
TARGET_SPEEDUP = 1.3
#: Timed batch-1 calls per model when --repeats is not given.
DEFAULT_REPEATS = {"seed-cnn": 200, "efficientnet-lite0": 50}


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call: median and 90th percentile over ``calls`` timed calls."""

    median_ms: float
    p90_ms: float
    calls: int

    def __str__(self) -> str:
        return f"{self.median_ms:8.2f} ms median {self.p90_ms:8.2f} ms p90"


def time_calls(function: Callable[[], object], calls: int, warmup: int) -> Latency:
    """Call ``function`` ``warmup`` times untimed, then ``calls`` times timed."""
    for _ in range(warmup):
        function()
    seconds = np.empty(calls)
    for index in range(calls):
        start = time.perf_counter()
        function()
        seconds[index] = time.perf_counter() - start
    milliseconds = 1000 * seconds
    return Latency(float(np.median(milliseconds)), float(np.percentile(milliseconds, 90)), calls)


def channels_last_predictor(model_folder: Path) -> Callable[[torch.Tensor], np.ndarray]:
    """Eager probabilities like ``Classifier.predict_prepared`` (one batch), but with the network
    (loaded afresh from ``model_folder``) and its input in ``channels_last``, under
    ``torch.inference_mode``."""
    classifier = load_model(model_folder)
    card = classifier.card
    network = classifier.network.eval().to(memory_format=torch.channels_last)

    def predict(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            batch = normalise(images, card.mean, card.std, card.in_channels, channels_last=True)
            logits = network(batch)
            return torch.softmax(logits / card.temperature, dim=1).numpy()

    return predict


def end_to_end_image(path: Path | None) -> tuple[np.ndarray, str]:
    """The decoded X-ray for the end-to-end timing and a description of it."""
    from covidcxr.io import read_image

    if path is None:
        found = sorted(REAL_SAMPLE.rglob("images/*.png"))
        path = found[0] if found else None
    if path is None:
        ramp = np.linspace(0.0, 1.0, 1024, dtype=np.float32)
        return np.outer(ramp, ramp[::-1]), "synthetic 1024×1024"
    image = read_image(path)
    return image, f"{path.name}, {image.shape[1]}×{image.shape[0]}"


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:5.2f}×" if fast > 0 else "  n/a"


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def bench_model(
    name: str,
    folder: Path,
    image: np.ndarray,
    repeats: int,
    warmup: int,
    batch: int,
    batch_runs: int,
) -> None:
    """Export one model, time both runtimes and print the figures."""
    model_folder = save_untrained(folder / name, name)
    started = time.perf_counter()
    export = export_onnx(model_folder, folder / f"{name}.onnx")
    export_seconds = time.perf_counter() - started
    eager = load_model(model_folder)
    if not isinstance(eager, Classifier):
        raise TypeError(f"{model_folder}: expected a classifier, loaded {eager!r}")
    onnx = load_onnx(export.path)
    side = eager.card.input_size
    print(
        f"\n{name}: {side}×{side} input, {eager.card.num_classes} classes; exported in "
        f"{export_seconds:.1f} s, max |ORT - torch| = {export.max_abs_difference:.1e}"
    )

    generator = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, 1, side, side), dtype=torch.uint8, generator=generator)
    many = torch.randint(0, 256, (batch, 1, side, side), dtype=torch.uint8, generator=generator)
    runtimes: dict[str, Classifier] = {"PyTorch eager": eager, "ONNX Runtime": onnx}
    target = TARGET_MS[name]

    print(
        f"  batch 1, predict_prepared (uint8 → probabilities), {repeats} calls after {warmup} "
        f"warm-up; target ≤ {target:g} ms"
    )
    single: dict[str, Latency] = {}
    for label, classifier in runtimes.items():
        latency = time_calls(lambda c=classifier: c.predict_prepared(one, 1), repeats, warmup)
        single[label] = latency
        print(f"    {label:<28}{latency}   {verdict(latency.median_ms <= target)}")
    predict_channels_last = channels_last_predictor(model_folder)
    latency = time_calls(lambda: predict_channels_last(one), repeats, warmup)
    eager_ms = single["PyTorch eager"].median_ms
    change = "faster" if latency.median_ms < eager_ms else "not faster"
    print(
        f"    {'eager, channels_last':<28}{latency}   {change} than the library's eager path "
        f"({ratio(eager_ms, latency.median_ms)})"
    )
    speedup = eager_ms / single["ONNX Runtime"].median_ms
    print(
        f"    speed-up ORT / eager: {speedup:.2f}× (target ≥ {TARGET_SPEEDUP:g}×: "
        f"{verdict(speedup >= TARGET_SPEEDUP)})"
    )

    print("  batch 1, predict_proba([decoded image]) end to end (resize included)")
    end_to_end: dict[str, Latency] = {}
    for label, classifier in runtimes.items():
        latency = time_calls(
            lambda c=classifier: c.predict_proba([image], 1), max(1, repeats // 2), warmup
        )
        end_to_end[label] = latency
        print(f"    {label:<28}{latency}")
    print(
        "    speed-up ORT / eager: "
        f"{ratio(end_to_end['PyTorch eager'].median_ms, end_to_end['ONNX Runtime'].median_ms)}"
    )

    print(f"  throughput at batch {batch}, median of {batch_runs} calls")
    throughput: dict[str, float] = {}
    for label, classifier in runtimes.items():
        latency = time_calls(
            lambda c=classifier: c.predict_prepared(many, batch), batch_runs, max(1, warmup // 10)
        )
        throughput[label] = 1000 * batch / latency.median_ms
        per_image = latency.median_ms / batch
        print(f"    {label:<28}{throughput[label]:8.0f} images/s ({per_image:.2f} ms/image)")
    print(
        "    speed-up ORT / eager: "
        f"{ratio(throughput['ONNX Runtime'], throughput['PyTorch eager'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to time"
    )
    parser.add_argument(
        "--repeats", type=int, help="timed batch-1 calls (default 200 seed-cnn, 50 lite0)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput run")
    parser.add_argument("--batch-runs", type=int, default=10, help="timed batched calls")
    parser.add_argument("--image", type=Path, help="X-ray for the end-to-end timing")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: the cores this process may use)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls, noisy")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.batch_runs = 3, 3

    import onnxruntime

    tuned = tune_allocator()
    usable = len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads or usable)
    image, image_label = end_to_end_image(args.image)
    print(
        f"{os.cpu_count()} CPUs, {usable} usable, load average {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads, onnxruntime "
        f"{onnxruntime.__version__} with its default threads; malloc tuned: {tuned}; "
        f"end-to-end image: {image_label}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            repeats = args.repeats or DEFAULT_REPEATS[name]
            if args.quick:
                repeats = min(repeats, 20)
            bench_model(
                name, Path(folder), image, repeats, args.warmup, args.batch, args.batch_runs
            )


if __name__ == "__main__":
    main()
