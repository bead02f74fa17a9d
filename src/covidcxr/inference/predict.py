"""``covidcxr predict``: class probabilities for image files, at any scale.

:func:`predict_files` streams: folders are walked lazily (in a stable, sorted order), images
are decoded and resized by worker processes a chunk ahead of the network, and each chunk's
rows are appended to the output as soon as they exist, so memory stays bounded however large
the archive. With ``resume=True`` files already in the output are skipped: a run killed at
any point continues where it stopped. Unreadable files never stop a run; they are counted and
listed with their reasons (and written to ``<output>.failures.csv`` beside a CSV / JSON Lines
output, or into the ``failures`` list of a JSON output).

Output formats, chosen by the suffix of ``out``:

* ``.csv`` — ``path, predicted, confidence, p_<class>...`` and, for a model with a feature
  reference (:mod:`covidcxr.inference.ood`), ``ood_score, unfamiliar``, one row per image;
* ``.jsonl`` — one JSON object per line, the same fields;
* ``.json`` — ``{"class_names", "predictions": [...], "failures": [...]}``, one prediction per
  line while it is written, so a cut-off file can be resumed.

Any other suffix is refused (an X-ray named as ``out`` would otherwise be overwritten), and so
is an existing ``out`` unless ``resume`` (continue it) or ``force`` (replace it). Beside the
output, ``<out>.model.json`` records which model wrote it (:meth:`Classifier.identity`: the
SHA-256 of its weights); ``resume`` refuses a file written by another model, so that one file
never mixes two models' rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from covidcxr.atomic import write_text

CHUNK = 256
LUNG_CHUNK = 16
RUNTIMES = ("torch", "onnx")
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
"""Output suffix -> format."""
MODEL_SUFFIX = ".model.json"
"""Beside an output: which model wrote it."""

# How the JSON output is laid out, so that a resumed run can find the rows written so far.
_JSON_ROW_PREFIX = "    "
_JSON_FAILURES = '\n  ],\n  "failures": '


@dataclass
class PredictionResult:
    """What a prediction run did. ``rows`` holds the predictions when they were kept (always
    without ``out``), ``predicted`` counts them either way, ``skipped`` counts files already in
    the output of a resumed run, ``failures`` lists files that could not be read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    out: Path | None = None
    predicted: int = 0
    skipped: int = 0


def iter_image_files(inputs: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for every image file under ``inputs`` (files and folders, folders
    walked recursively in sorted order, hidden entries and ``masks/`` folders skipped), and
    ``(path, reason)`` for inputs that do not exist. Lazy: nothing is listed ahead."""
    from covidcxr.data.layouts import is_image_file, is_mask_path

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for folder, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                base = Path(folder)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    file = base / name
                    if is_image_file(file) and not is_mask_path(file.relative_to(path)):
                        yield file, None
        elif path.is_file():
            yield path, None
        else:
            yield path, "no such file or folder"


def find_image_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """:func:`iter_image_files` as two lists: image files, and missing inputs with a reason."""
    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for path, reason in iter_image_files(inputs):
        if reason is None:
            files.append(path)
        else:
            missing.append((path, reason))
    return files, missing


def predict_files(
    model: Any,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    seg_model: str | Path | None = None,
    *,
    runtime: str = "torch",
    resume: bool = False,
    force: bool = False,
    keep_rows: bool | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PredictionResult:
    """Predict every image under ``inputs`` with ``model``.

    Args:
        model: a saved model (run folder, model folder, ``.onnx`` file) or a loaded
            :class:`covidcxr.inference.artifact.Classifier` (an
            :class:`~covidcxr.inference.export.OnnxClassifier` included).
        inputs: image files and folders.
        out: ``.csv``, ``.jsonl`` or ``.json`` file, written as the run goes (see the module
            docstring); None keeps the rows in memory only.
        batch_size: images per forward pass.
        workers: decoding processes (default: all cores, at most 8; 0: decode in this process).
        progress: called with ``(done, total)`` after each chunk; ``total`` is known from a
            first, listing-only walk of the inputs.
        seg_model: lung segmenter for a classifier trained with ``--lungs`` (default: the one
            saved with it).
        runtime: ``"torch"`` or ``"onnx"`` (ONNX Runtime on the model's exported
            ``model.onnx``; see :mod:`covidcxr.inference.export`).
        resume: skip files already in ``out`` and append to it (refused when another model
            wrote it).
        force: replace an existing ``out``; without ``resume`` or ``force`` an existing ``out``
            is refused.
        keep_rows: keep every row in ``result.rows`` (default: only when ``out`` is None).
        on_rows: called with each chunk's rows as they are predicted.
        warn: called with a message when ``resume`` finds rows that match none of the inputs.
    """
    from covidcxr.inference.artifact import load_classifier
    from covidcxr.perf import tune_allocator

    if out is not None:
        check_output(out, inputs, resume=resume, force=force)
    tune_allocator()
    # fails now, before reading thousands of files, when a lung-focused model has no segmenter
    classifier, _ = load_classifier(load_predictor(model, runtime), seg_model)
    names = classifier.class_names
    if warn is not None:
        for message in classifier.card.warnings():
            warn(message)
    keep = out is None if keep_rows is None else keep_rows
    checked = bool(classifier.card.ood)
    writer = None
    if out is not None:
        identity = classifier.identity()
        check_identity(Path(out), identity, resume, warn)
        writer = _Writer(Path(out), names, resume, checked)
        write_identity(Path(out), identity)
    result = PredictionResult(out=writer.path if writer else None)
    # Lung focusing needs each image at full resolution, so fewer of them travel at once.
    lungs = classifier.lung_mode != "none"
    size, chunk_size = (None, LUNG_CHUNK) if lungs else (classifier.card.input_size, CHUNK)
    try:
        done = {_key(path) for path in writer.done} if writer else set()
        total = already = 0
        for path, reason in iter_image_files(inputs):  # a listing walk: the total, for the ETA
            if reason is None:
                total += 1
                already += _key(path) in done
        if done and not already and warn is not None:
            warn(
                f"none of the {len(done)} rows already in {out} match these inputs (paths are "
                "compared as absolute paths); they are kept and every file is predicted"
            )
        pending = _pending_files(inputs, done, result)
        unreadable = 0
        if progress is not None:
            progress(already, total)
        decoding = contextlib.closing(_decode_ahead(pending, size, workers, chunk_size))
        with decoding as chunks:
            for chunk, decoded in chunks:
                pairs = list(zip(chunk, decoded, strict=True))
                good = [(path, image) for path, (image, _) in pairs if image is not None]
                failed = [(path, error) for path, (_, error) in pairs if error is not None]
                result.failures.extend(failed)
                unreadable += len(failed)
                rows = predict_rows(classifier, good, names, batch_size)
                result.predicted += len(rows)
                if writer is not None:
                    writer.write(rows)
                if keep:
                    result.rows.extend(rows)
                if on_rows is not None and rows:
                    on_rows(rows)
                if progress is not None:
                    progress(result.skipped + result.predicted + unreadable, total)
    finally:
        if writer is not None:
            writer.close(result.failures)
    return result


def check_output(
    out: str | Path, inputs: Sequence[str | Path], *, resume: bool = False, force: bool = False
) -> None:
    """Refuse an ``out`` that :func:`predict_files` must not write: a folder, a suffix other
    than :data:`OUTPUT_FORMATS`, one of the ``inputs``, or an existing file without ``resume``
    or ``force``. Raises ``ValueError`` (``FileExistsError`` for the last) saying what to do."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give --out a file name ending in {_suffixes()}")
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(
            f"{out}: predictions are written as {_suffixes()}, chosen by the suffix; "
            f"{out.suffix or 'no suffix'} is none of them"
        )
    target = os.path.realpath(out)
    for item in inputs:
        if os.path.realpath(Path(item).expanduser()) == target:
            raise ValueError(f"{out}: is one of the inputs; write the predictions elsewhere")
    if resume and force:
        raise ValueError("--resume and --force contradict each other: keep the file, or replace it")
    if out.exists() and not (resume or force):
        raise FileExistsError(
            f"{out}: already exists; pass --resume to continue it, --force to replace it, or "
            "choose another file"
        )


def _suffixes() -> str:
    return ", ".join(OUTPUT_FORMATS)


def identity_path(out: str | Path) -> Path:
    """Where the identity of the model that wrote ``out`` is kept."""
    out = Path(out)
    return out.with_name(out.name + MODEL_SUFFIX)


def check_identity(
    out: Path, identity: dict[str, Any], resume: bool, warn: Callable[[str], None] | None
) -> None:
    if not (resume and out.is_file()):
        return
    recorded_path = identity_path(out)
    if not recorded_path.is_file():
        if warn is not None:
            warn(
                f"{out}: no {recorded_path.name} says which model wrote it (written by an older "
                "covidcxr); its rows are kept as they are"
            )
        return
    try:
        recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{recorded_path}: unreadable ({error}); delete it to resume anyway, or write to a "
            "new file"
        ) from None
    if recorded.get("sha256") != identity["sha256"]:
        raise ValueError(
            f"{out}: written by {recorded.get('model')} ({recorded.get('weights')}, weights "
            f"{str(recorded.get('sha256'))[:12]}…), not by this model ({identity['model']}, "
            f"{identity['weights']}, weights {identity['sha256'][:12]}…); resume with the model "
            "that wrote it, or write to a new file"
        )


def write_identity(out: Path, identity: dict[str, Any]) -> None:
    write_text(identity_path(out), json.dumps(identity, indent=2) + "\n")


# --------------------------------------------------------------------------------------------


def load_predictor(model: Any, runtime: str) -> Any:
    from covidcxr.inference.artifact import Classifier, load_model

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime should be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if isinstance(model, Classifier):
        return model
    if runtime == "onnx" or Path(model).suffix.lower() == ".onnx":
        from covidcxr.inference.export import load_onnx

        loaded = load_onnx(model)
    else:
        loaded = load_model(model)
    if not isinstance(loaded, Classifier):
        raise ValueError(
            f"{model}: is a lung segmentation model; use `covidcxr segment predict` for masks"
        )
    return loaded


def prediction_columns(class_names: Sequence[str], checked: bool) -> list[str]:
    """The columns of a predictions table, in order: ``path``, ``predicted``, ``confidence``,
    ``p_<class>`` per class, and with an out-of-distribution reference (``checked``)
    ``ood_score`` and ``unfamiliar``. Every engine writes these."""
    columns = ["path", "predicted", "confidence", *[f"p_{name}" for name in class_names]]
    return columns + (["ood_score", "unfamiliar"] if checked else [])


def _pending_files(
    inputs: Sequence[str | Path], done: set[str], result: PredictionResult
) -> Iterator[Path]:
    """Image files still to predict; missing inputs go to ``result.failures``, files already
    in the output are counted in ``result.skipped``."""
    for path, reason in iter_image_files(inputs):
        if reason is not None:
            result.failures.append((path, reason))
        elif _key(path) in done:
            result.skipped += 1
        else:
            yield path


def _key(path: str | Path) -> str:
    """How a file is recognised in an output being resumed: its absolute path (symlinks kept,
    so two links to one file stay two rows), whatever form the inputs were typed in."""
    return os.path.abspath(os.fspath(path))


def _decode_ahead(
    files: Iterator[Path], size: int | None, workers: int | None, chunk_size: int
) -> Iterator[tuple[list[Path], list[tuple[np.ndarray | None, str | None]]]]:
    """Chunks of ``files`` with their decoded, resized images. With workers, the next chunk
    is decoded while the caller works on the current one (two chunks in memory at most)."""
    from itertools import islice

    from covidcxr.pool import default_workers, process_pool

    count = default_workers() if workers is None else workers
    chunks = iter(lambda: list(islice(files, chunk_size)), [])
    if count <= 1:
        for chunk in chunks:
            yield chunk, [read_resized((path, size)) for path in chunk]
        return
    executor = process_pool(count)

    def submit(chunk: list[Path]) -> Any:
        jobs = [(path, size) for path in chunk]
        return executor.map(read_resized, jobs, chunksize=max(1, len(chunk) // (4 * count)))

    try:
        current = next(chunks, None)
        future = submit(current) if current else None
        while current:
            following = next(chunks, None)
            next_future = submit(following) if following else None
            yield current, list(future)
            current, future = following, next_future
    finally:
        # Closed early (an error downstream, Ctrl-C): the chunk decoded ahead is dropped. The
        # pool is always joined: one left running (``wait=False``) races the interpreter's exit
        # and prints "OSError: [Errno 9] Bad file descriptor" after the results. Joining costs
        # at most the images a worker is decoding now (Ctrl-C reaches the workers too).
        executor.shutdown(wait=True, cancel_futures=True)


def predict_rows(
    classifier: Any, good: list[tuple[Path, np.ndarray]], names: list[str], batch_size: int
) -> list[dict[str, Any]]:
    import torch

    if not good:
        return []
    images = [image for _, image in good]
    if classifier.lung_mode != "none":
        batch = classifier.prepare(images)  # full-resolution images: focus, then resize
    else:
        batch = torch.from_numpy(np.stack(images)).unsqueeze(1)
    analysis = classifier.analyse_prepared(batch, batch_size)
    rows = []
    for index, ((path, _), row) in enumerate(zip(good, analysis.probabilities, strict=True)):
        best = int(np.argmax(row))
        record = {
            "path": str(path),
            "predicted": names[best],
            "confidence": float(row[best]),
            **{f"p_{name}": float(p) for name, p in zip(names, row, strict=True)},
        }
        if analysis.ood_scores is not None:
            record["ood_score"] = round(float(analysis.ood_scores[index]), 4)
            record["unfamiliar"] = bool(analysis.unfamiliar[index])
        rows.append(record)
    return rows


def read_resized(job: tuple[Path, int | None]) -> tuple[np.ndarray | None, str | None]:
    """uint8 (size, size) of one file (or the float image itself when size is None), or the
    reason it could not be read."""
    from covidcxr.data.transforms import resize_image
    from covidcxr.io import failure_reason, read_image

    path, size = job
    try:
        image = read_image(path)
        return (image if size is None else resize_image(image, (size, size))), None
    except Exception as error:  # a decoder's own failure too: one bad file, not a dead run
        return None, failure_reason(error, path)


class _Writer:
    """Appends prediction rows to a CSV / JSON Lines / JSON file as they come, flushing each
    chunk to disk; on resume, reads the rows already there and cuts off a half-written one.

    File names that are not valid UTF-8 (possible on Linux) are kept byte for byte in CSV
    (``surrogateescape``) and escaped in JSON, and match again on resume.
    """

    def __init__(
        self, path: Path, class_names: list[str], resume: bool, checked: bool = False
    ) -> None:
        self.format = OUTPUT_FORMATS[path.suffix.lower()]
        self.path = path
        self.class_names = class_names
        self.columns = prediction_columns(class_names, checked)
        self.done: set[str] = set()
        self.rows_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = self._read_existing() if resume and path.is_file() else None
        if keep is not None:
            self.handle: TextIO = path.open("r+", **TEXT_OPTIONS)
            self.handle.seek(keep)
            self.handle.truncate()
        else:
            self.handle = path.open("w", **TEXT_OPTIONS)
            self.handle.write(self._head())
        self._flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.format == "csv":
            csv.DictWriter(self.handle, fieldnames=self.columns).writerows(rows)
        else:
            for row in rows:
                line = json.dumps(row)
                if self.format == "jsonl":
                    self.handle.write(line + "\n")
                else:
                    separator = "," if self.rows_written else ""
                    self.handle.write(f"{separator}\n{_JSON_ROW_PREFIX}{line}")
                self.rows_written += 1
        self._flush()

    def close(self, failures: list[tuple[Path, str]]) -> None:
        if self.handle.closed:
            return
        listed = [{"path": str(path), "reason": reason} for path, reason in failures]
        if self.format == "json":
            self.handle.write(_JSON_FAILURES + json.dumps(listed, indent=4) + "\n}\n")
        self._flush()
        self.handle.close()
        sidecar = self.path.with_name(self.path.name + ".failures.csv")
        if self.format != "json":
            if listed:
                with sidecar.open("w", **TEXT_OPTIONS) as handle:
                    writer = csv.DictWriter(handle, fieldnames=["path", "reason"])
                    writer.writeheader()
                    writer.writerows(listed)
            else:
                sidecar.unlink(missing_ok=True)

    def _head(self) -> str:
        if self.format == "csv":
            buffer = io.StringIO(newline="")
            csv.writer(buffer).writerow(self.columns)
            return buffer.getvalue()
        return _json_head(self.class_names) if self.format == "json" else ""

    def _flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def _read_existing(self) -> int | None:
        """Record the paths already predicted; return the offset to continue writing at (after
        the last complete row), or None to start the file afresh (it holds no row yet)."""
        data = self.path.read_bytes()
        head = self._head().encode("utf-8", "surrogateescape")
        if len(data) <= len(head) and head.startswith(data):
            return None  # empty, or cut inside the header: nothing to keep
        if head and not data.startswith(head):
            raise ValueError(
                f"{self.path}: not a prediction file of this model (its header is not "
                f"{self._head().strip()!r}); resume with the model that wrote it, or write to a "
                "new file"
            )
        if self.format == "csv":
            return self._read_csv(data, len(head))
        return self._read_lines(data, len(head))

    def _read_csv(self, data: bytes, start: int) -> int:
        """Rows after the header up to the last complete record (the csv module parses them:
        a quoted path may hold a newline). A record is complete when its line ending was
        written; one cut off inside its quotes ends the file for the reader."""
        ends: list[int] = []  # the offset after each line handed to the reader
        every_line = data[start:].splitlines(keepends=True)

        def lines() -> Iterator[str]:
            offset = start
            for line in every_line:
                offset += len(line)
                ends.append(offset)
                # Lines break at ASCII newlines, never inside a UTF-8 sequence.
                yield line.decode("utf-8", "surrogateescape")

        keep = start
        reader = csv.reader(lines(), strict=True)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                if len(ends) == len(every_line):
                    break  # the data ended inside a quoted field: a cut-off record
                raise ValueError(
                    f"{self.path}: not a CSV file this program wrote (line {reader.line_num + 1}: "
                    f"{error}); write to a new file instead of resuming"
                ) from None
            if not every_line[len(ends) - 1].endswith(b"\n"):
                break  # the last record, cut off before its line ending
            if len(row) != len(self.columns):
                raise ValueError(
                    f"{self.path}: a row with {len(row)} columns where this model writes "
                    f"{len(self.columns)}; write to a new file instead of resuming"
                )
            self.done.add(row[0])
            keep = ends[-1]
        return keep

    def _read_lines(self, data: bytes, start: int) -> int:
        """JSON Lines, or the row lines of the JSON layout (indent + object + a comma before
        the next row)."""
        offset = keep = start
        for line in data[start:].splitlines(keepends=True):
            begin, offset = offset, offset + len(line)
            text = line.strip()
            if not text:
                continue
            if self.format == "jsonl" and not line.endswith(b"\n"):
                break  # cut off while being written
            if self.format == "json" and not line.startswith(_JSON_ROW_PREFIX.encode() + b"{"):
                break  # the closing "]" and failures of a finished run
            try:
                row = json.loads(text.rstrip(b","))
            except json.JSONDecodeError:
                break
            if not isinstance(row, dict) or list(row) != self.columns:
                raise ValueError(
                    f"{self.path}: holds rows that are not this model's predictions (fields "
                    f"{list(row) if isinstance(row, dict) else type(row).__name__}, expected "
                    f"{self.columns}); write to a new file instead of resuming"
                )
            self.done.add(str(row["path"]))
            self.rows_written += 1
            # JSON: continue right after the object; the next row brings its own comma.
            keep = offset if self.format == "jsonl" else begin + len(line.rstrip().rstrip(b","))
        return keep


# Text files of predictions: UTF-8, and file names that are not UTF-8 kept as they are.
#: How every engine opens its text outputs: UTF-8, file names that are not UTF-8 kept byte for
#: byte (surrogateescape), newlines as the csv module writes them.
TEXT_OPTIONS: dict[str, Any] = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}


def _json_head(class_names: list[str]) -> str:
    return '{\n  "class_names": ' + json.dumps(class_names) + ',\n  "predictions": ['
