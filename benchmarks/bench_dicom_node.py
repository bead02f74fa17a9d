"""Studies per minute through Orthanc and ``covidcxr dicom listen`` on this machine.

    .venv/bin/python benchmarks/bench_dicom_node.py [--studies 40] [--model seed-cnn-db]
        [--seg unet-lite-db]

Starts Debian's Orthanc on loopback (temporary storage and configuration, free ports, the
README's routing script that forwards every CR / DX to covidcxr) and the node as an operator
does (``covidcxr dicom listen MODEL --seg SEG --send-to ORTHANC@127.0.0.1:PORT``), waits for
its "listening" line (models loaded), sends one warm-up study, then stores ``--studies`` real
X-rays (the real sample's, as DX films in studies of their own, through Orthanc's REST API,
8 at a time) and waits until every study holds its SR and its Secondary Capture.

Prints studies per minute (from the first upload to the last result stored in Orthanc), the
median film size, and the node's queue at its longest. Orthanc, the node and the uploads share
the machine's cores. Not a test: nothing is asserted. Needs Orthanc
(``apt-get install orthanc orthanc-dicomweb``) and the real sample
(``../shared/data/real-sample``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The tests' builders: real X-rays as DICOM films, and Orthanc started on loopback.
sys.path.insert(0, str(REPO / "tests"))

from dicomnode.node_helpers import Orthanc, free_port, real_pngs, xray_dataset  # noqa: E402

CLI = "import covidcxr.cli.dicom; from covidcxr.cli import app; app()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--model", default="seed-cnn-db")
    parser.add_argument("--seg", default="unet-lite-db")
    parser.add_argument(
        "--side",
        type=int,
        default=0,
        help="Resize every film to this many px on its longest "
        "side (a DX detector gives ~2,500-3,000); default: the sample's own sizes.",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="covidcxr-bench-") as folder:
        run(Path(folder), options)


def run(folder: Path, options: argparse.Namespace) -> None:
    node_port = free_port()
    orthanc = Orthanc(folder / "orthanc", node_port)
    queue = folder / "queue"
    command = [
        sys.executable,
        "-c",
        CLI,
        "dicom",
        "listen",
        options.model,
        "--port",
        str(node_port),
        "--send-to",
        orthanc.address,
        "--queue",
        str(queue),
        "--quiet",
    ]
    if options.seg:
        command += ["--seg", options.seg]  # fmt: skip
    node = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"the node did not start: {line!r}")
        pngs = real_pngs(min(options.studies, 49))
        films = [resized(xray_dataset(pngs[i % len(pngs)]), options.side)
                 for i in range(options.studies)]  # fmt: skip
        warm_up = xray_dataset(pngs[0])
        orthanc.upload(warm_up)
        wait(orthanc, [warm_up], queue, 120)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(orthanc.upload, films))
        longest = wait(orthanc, films, queue, 60 + 30 * options.studies)
        elapsed = time.monotonic() - started
        sides = [max(int(f.Rows), int(f.Columns)) for f in films]
        print(
            f"{options.studies} studies through Orthanc and covidcxr ({options.model}"
            f"{' + ' + options.seg if options.seg else ''}) in {elapsed:.1f} s: "
            f"{60 * options.studies / elapsed:.1f} studies/minute; median film "
            f"{statistics.median(sides):.0f} px on its longest side; queue at most {longest}"
        )
    finally:
        node.terminate()
        node.wait(30)
        orthanc.close()


def resized(film, side: int):
    """``film`` with its pixels resized to ``side`` px on the longest side (0: as it is)."""
    if not side:
        return film
    import numpy as np
    from PIL import Image

    pixels = film.pixel_array
    scale = side / max(pixels.shape)
    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    grey = Image.fromarray(pixels.astype(np.int32)).resize(size, Image.Resampling.BILINEAR)
    array = np.clip(np.asarray(grey), 0, 4095).astype(np.uint16)
    film.Rows, film.Columns = array.shape
    film.PixelData = array.tobytes()
    return film


def wait(orthanc: Orthanc, films: list, queue: Path, timeout: float) -> int:
    """Wait until every film's study holds 3 instances; the longest queue seen."""
    deadline = time.monotonic() + timeout
    longest = 0
    waiting = {film.StudyInstanceUID for film in films}
    while waiting:
        longest = max(longest, len(list((queue / "pending").glob("*.dcm"))))
        waiting = {uid for uid in waiting if len(orthanc.study_instances(uid)) < 3}
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(waiting)} studies got no results within {timeout:.0f} s")
        time.sleep(0.5)
    return longest


if __name__ == "__main__":
    main()
