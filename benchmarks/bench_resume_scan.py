"""How long ``predict --resume`` takes to read what an earlier run wrote, before it predicts
anything: the CSV / JSON Lines / JSON scan of :class:`covidcxr.inference.predict._Writer`.

    python benchmarks/bench_resume_scan.py [ROWS]     # default 200,000 rows

Writes ROWS prediction rows of a three-class model in each format into a temporary folder
(paths like an archive's), cuts each file inside its last row as a kill would, and times the
resume scan. Prints the file size, the rows found and the seconds per format.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from covidcxr.inference.predict import _Writer

CLASSES = ["Normal", "COVID", "Viral Pneumonia"]


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for suffix in (".csv", ".jsonl", ".json"):
            path = Path(folder) / f"predictions{suffix}"
            writer = _Writer(path, CLASSES, resume=False)
            batch = [
                {
                    column: f"/archive/{index:07d}.png" if column == "path" else 0.123456
                    for column in writer.columns
                }
                | {"predicted": "Normal"}
                for index in range(rows)
            ]
            writer.write(batch)
            writer.close([])
            data = path.read_bytes()
            path.write_bytes(data[: -40 if suffix == ".json" else -5])  # cut inside a row
            started = time.perf_counter()
            resumed = _Writer(path, CLASSES, resume=True)
            seconds = time.perf_counter() - started
            resumed.handle.close()
            print(
                f"{suffix:7} {len(data) / 1e6:6.1f} MB  {len(resumed.done):,} complete rows "
                f"found  {seconds:.2f} s"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
