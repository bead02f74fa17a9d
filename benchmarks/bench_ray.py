"""What Ray costs on one machine: ``predict --engine ray`` against the local process-pool engine.

    .venv/bin/python benchmarks/bench_ray.py [--images 10000] [--work /tmp/covidcxr-bench-ray]
        [--model seed-cnn-db] [--batch-size 64] [--concurrency 1] [--num-cpus 1]

Builds (once; reused) a folder of ``--images`` real X-rays in ``--work``: hard links (copies
across file systems) to the real-sample films, each under its own name, so the decoding work
is the real one and no data enters the repository. Then, on this machine's cores:

* local: :func:`covidcxr.inference.predict_files` to a CSV, decoding workers = cores;
* ray, cold: :func:`covidcxr.archive.predict_on_ray` as ``--engine ray`` without ``--address``
  runs it: a local Ray cluster started, used and stopped;
* ray, warm: the same against a Ray session already running (as on a cluster: connecting
  costs ~1 s, not the start), started with ``num_cpus`` = cores.

Each figure is images/s end to end (model loading, listing and writing included). The page
cache is warmed by a first untimed read of every file. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DATASET = REPO.parent / "shared" / "data" / "real-sample" / "COVID-19_Radiography_Dataset"


def build_folder(work: Path, count: int) -> Path:
    """``work/images-COUNT``: ``count`` real films, 1,000 to a sub-folder."""
    folder = work / f"images-{count}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    sources = sorted(REAL_DATASET.glob("*/images/*.png"))
    if not sources:
        raise SystemExit(f"no real-sample films under {REAL_DATASET}")
    shutil.rmtree(folder, ignore_errors=True)
    for index in range(count):
        target = folder / f"part{index // 1000:02d}" / f"film{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        source = sources[index % len(sources)]
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    marker.touch()
    return folder


def warm_cache(folder: Path) -> None:
    for path in folder.rglob("*.png"):
        path.read_bytes()


def timed(label: str, count: int, run: callable) -> float:
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    assert result.predicted == count, (label, result.predicted, result.failures[:3])
    print(f"{label:<34} {seconds:7.1f} s  {count / seconds:7.1f} images/s", flush=True)
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/covidcxr-bench-ray"))
    parser.add_argument("--model", default="seed-cnn-db")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=1.0)
    args = parser.parse_args()

    import ray

    from covidcxr.archive import predict_on_ray
    from covidcxr.inference.predict import predict_files

    cores = len(os.sched_getaffinity(0))
    folder = build_folder(args.work, args.images)
    warm_cache(folder)
    print(
        f"{args.images} real films (299x299 PNG), model {args.model}, {cores} cores, "
        f"batch {args.batch_size}; ray {ray.__version__}: {args.concurrency} actor(s) x "
        f"{args.num_cpus:g} CPU, decoding tasks on the rest"
    )
    options = {
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "num_cpus": args.num_cpus,
        "force": True,
    }
    out = args.work / "out"
    local = timed(
        f"local, {cores} decoding processes",
        args.images,
        lambda: predict_files(
            args.model, [folder], out / "local.csv", args.batch_size, cores, force=True
        ),
    )
    cold = timed(
        "ray, local cluster started",
        args.images,
        lambda: predict_on_ray(args.model, [folder], out / "ray-cold", **options),
    )
    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    print(f"{'(ray.init of a local cluster)':<34} {time.perf_counter() - started:7.1f} s")
    try:
        warm = timed(
            "ray, cluster already running",
            args.images,
            lambda: predict_on_ray(args.model, [folder], out / "ray-warm", **options),
        )
    finally:
        ray.shutdown()
    print(f"ray / local: cold {cold / local:.2f}x, warm {warm / local:.2f}x")


if __name__ == "__main__":
    main()
