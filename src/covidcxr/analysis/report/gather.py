"""``covidcxr report``: one self-contained HTML file that shows how much of a model's accuracy
is real — dataset, training, results with confidence intervals, calibration, Grad-CAM, sources,
shortcut probes and leakage, each with one plain sentence saying what it means.

Figures are embedded as base64 PNGs; the file needs nothing else to open.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.analysis.report.blocks import (
    Block,
    Bullets,
    Figure,
    Gallery,
    Paragraph,
    Section,
    Table,
)
from covidcxr.analysis.report.render import render_report
from covidcxr.wording import plural

SECTIONS = (
    ("dataset", "Dataset"),
    ("training", "Training"),
    ("results", "Test results"),
    ("calibration", "Calibration"),
    ("explanations", "Where the model looks (Grad-CAM)"),
    ("sources", "Results per source"),
    ("probes", "Shortcut probes"),
    ("verdict", "What this model looks at"),
    ("roc", "ROC curves per class"),
    ("external", "External sets"),
    ("leakage", "Leakage between splits"),
)
GALLERY_PER_KIND = 2  # right and wrong examples per class
SALIENCY_SAMPLE = 96  # test images whose Grad-CAM lung share is averaged

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]


@dataclass
class ReportResult:
    path: Path
    sections: list[Section]
    data: dict[str, Any]


def build_report(
    run_dir: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    workers: int | None = None,
    progress_factory: ProgressFactory = lambda _: None,
    external: Sequence[str | Path] = (),
) -> ReportResult:
    """Write the report of the training run in ``run_dir`` to ``out`` (an .html file). With
    ``data`` (the dataset the run was trained on), also the dataset summary, Grad-CAM gallery,
    per-source table, shortcut probes and leakage check on the run's test split; without it
    those sections say what they need. Each ``external`` set is scored whole and compared with
    the test split (:func:`covidcxr.analysis.evaluate.compare_sets`); the verdict repeats a
    collapse."""
    from covidcxr.inference.artifact import load_model

    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (is this a `covidcxr train` run?)")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    if metrics.get("task", "classification") != "classification":
        raise ValueError(f"{run_dir}: the report covers classifiers; this is a segmentation run")
    classifier = load_model(run_dir)
    names = list(metrics["class_names"])
    test = _TestSet.load(run_dir, data, names) if data is not None else None

    sections = [
        _dataset_section(metrics, data, workers, progress_factory),
        _training_section(run_dir, metrics),
        _results_section(run_dir, metrics),
        _calibration_section(run_dir, metrics),
    ]
    extra: dict[str, Any] = {}
    if test is None:
        needs = "Pass --data (the dataset this run was trained on) to see this section."
        for key, title in SECTIONS[4:]:
            sections.append(Section(key, title, needs))
    else:
        probabilities = classifier.predict_proba(test.images)
        extra["test_accuracy"] = float(np.mean(probabilities.argmax(1) == test.labels))
        sections += [
            _explanations_section(classifier, test, probabilities, extra),
            _sources_section(test, probabilities, names, extra),
            _probes_section(classifier, test, extra),
        ]
        external_section = _external_section(run_dir, metrics, external, workers, extra)
        sections += [
            _verdict_section(extra),
            _roc_section(probabilities, test.labels, names, extra),
            external_section,
            _leakage_section(test, workers, extra),
        ]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings = classifier.card.warnings()
    provenance = _provenance(run_dir, data, classifier.card)
    extra["provenance"] = provenance
    title = f"covidcxr report: {metrics['model']} ({run_dir.name})"
    out.write_text(render_report(title, sections, warnings, provenance), encoding="utf-8")
    return ReportResult(out, sections, extra)


# --------------------------------------------------------------------------------------------
# The test split, read once


@dataclass
class _TestSet:
    samples: list
    images: list[np.ndarray]
    labels: np.ndarray
    masks: list[np.ndarray | None]
    all_samples: list
    all_splits: list[str]
    unreadable: list[tuple[Path, str]]

    @classmethod
    def load(cls, run_dir: Path, data: str | Path, names: list[str]) -> _TestSet:
        from covidcxr.data.layouts import discover
        from covidcxr.data.splits import read_split_csv
        from covidcxr.io import ImageReadError, failure_reason, read_image, read_mask

        root = discover(data, len(names)).root
        samples, splits = read_split_csv(run_dir / "splits.csv", root)
        kept, images, masks, unreadable = [], [], [], []
        for sample, split in zip(samples, splits, strict=True):
            if split != "test":
                continue
            try:
                image = read_image(sample.path)
                mask = read_mask(sample.mask_path) if sample.mask_path else None
            except (ImageReadError, OSError) as error:
                unreadable.append((sample.path, failure_reason(error)))
                continue
            kept.append(sample)
            images.append(image)
            masks.append(mask)
        if not kept:
            raise ValueError(f"{run_dir / 'splits.csv'}: no readable test images under {root}")
        labels = np.array([s.label for s in kept])
        return cls(kept, images, labels, masks, samples, splits, unreadable)


# --------------------------------------------------------------------------------------------
# Sections


def _dataset_section(metrics, data, workers, progress_factory) -> Section:
    sizes = metrics.get("split_sizes", {})
    split_line = ", ".join(f"{name} {count:,}" for name, count in sizes.items())
    if data is None:
        return Section(
            "dataset",
            "Dataset",
            f"The run used {sum(sizes.values()):,} images ({split_line}).",
            [Paragraph("Pass --data for the dataset's summary and exploratory figures.")],
        )
    from covidcxr.data.inspect import inspect_dataset

    with tempfile.TemporaryDirectory() as folder:
        report = inspect_dataset(
            data,
            len(metrics["class_names"]),
            Path(folder),
            True,
            workers,
            progress_factory("Inspecting the dataset"),
        )
        figures = [Figure.from_file(Path(path)) for path in report.figures]
    sources = {name: len(found) for name, found in report.sources.items()}
    finding = (
        f"{report.total:,} images in {len(report.class_names)} classes "
        f"({', '.join(f'{n} {c:,}' for n, c in report.counts.items())}); "
        f"{len(report.duplicate_groups):,} groups of near-duplicate images, kept within one split; "
        f"the run split them {split_line}."
    )
    rows = [
        [
            name,
            f"{report.counts[name]:,}",
            f"{report.masks_per_class[name]:,}",
            ", ".join(f"{s} ({c:,})" for s, c in report.sources[name].items()),
        ]
        for name in report.class_names
    ]
    body = [
        Table(["class", "images", "lung masks", "sources"], rows),
        Paragraph(
            f"{plural(len(report.unreadable), 'unreadable file')}; sources per class: {sources}."
        ),
        *figures,
    ]
    return Section("dataset", "Dataset", finding, body)


def _training_section(run_dir: Path, metrics) -> Section:
    epochs, best = metrics.get("epochs_run"), metrics.get("best_epoch")
    stopped = "early stopping ended it" if metrics.get("stopped_early") else "it ran every epoch"
    finding = (
        f"The model trained for {epochs} epochs ({stopped}); the validation loss was lowest at "
        f"epoch {best}, and those are the weights kept."
    )
    body = [Figure.from_file(run_dir / "curves.png")] if (run_dir / "curves.png").is_file() else []
    return Section("training", "Training", finding, body)


def _results_section(run_dir: Path, metrics) -> Section:
    test = metrics.get("test")
    if not test:
        return Section("results", "Test results", "The run had no test split.")
    intervals = metrics.get("test_intervals") or {}
    accuracy = intervals.get("accuracy", {})
    finding = (
        f"On {test['num_samples']:,} test images the model is right "
        f"{_percent(test['accuracy'])} of the time"
        + (
            f" (95 % confidence interval {_percent(accuracy.get('low'))} to "
            f"{_percent(accuracy.get('high'))})."
            if accuracy
            else "."
        )
    )
    per_class_ci = intervals.get("per_class", {})
    rows = []
    for name, scores in test["per_class"].items():
        ci = per_class_ci.get(name, {})
        rows.append(
            [
                name,
                f"{scores['support']:,}",
                _with_ci(scores["recall"], ci.get("sensitivity")),
                _with_ci(scores["specificity"], ci.get("specificity")),
                _with_ci(scores["precision"], ci.get("ppv")),
                _percent(scores["f1"]),
                _percent(scores["auroc"]),
            ]
        )
    body = [
        Table(
            [
                "class",
                "images",
                "sensitivity (recall)",
                "specificity",
                "PPV (precision)",
                "F1",
                "ROC-AUC",
            ],
            rows,
        ),
        Paragraph(
            f"Accuracy {_percent(test['accuracy'])}, macro-F1 {_percent(test['macro_f1'])}, "
            f"macro ROC-AUC {_percent(test['macro_auroc'])}. Brackets: 95 % bootstrap intervals."
        ),
    ]
    if (run_dir / "confusion_matrix.png").is_file():
        body.append(Figure.from_file(run_dir / "confusion_matrix.png"))
    return Section("results", "Test results", finding, body)


def _calibration_section(run_dir: Path, metrics) -> Section:
    calibration = metrics.get("calibration")
    if not calibration:
        return Section("calibration", "Calibration", "This run has no calibration data.")
    part = calibration.get("test") or calibration["val"]
    which = "test" if calibration.get("test") else "validation"
    temperature = calibration["temperature"]
    meaning = "(0 % would mean that a stated confidence of 90 % is right 90 % of the time)"
    if calibration.get("note"):  # the fit ran to a bound and was not used
        finding = (
            f"No temperature was applied: {calibration['note']}. The probabilities are the "
            f"network's own; their expected calibration error on the {which} split is "
            f"{_percent(part['ece_before'])} {meaning}."
        )
    else:
        finding = (
            f"A temperature of {temperature:.2f}, fitted on the validation split, brings the "
            f"expected calibration error on the {which} split from {_percent(part['ece_before'])}"
            f" to {_percent(part['ece_after'])} {meaning}; the saved model and `predict` use "
            "this temperature. Hollow points in the diagram are bins of fewer than 10 images."
        )
    rows = [
        [
            name,
            _percent(values["ece_before"]),
            _percent(values["ece_after"]),
            f"{values['nll_before']:.4f}",
            f"{values['nll_after']:.4f}",
        ]
        for name, values in (("validation", calibration["val"]), ("test", calibration.get("test")))
        if values
    ]
    body = [Table(["split", "ECE before", "ECE after", "NLL before", "NLL after"], rows)]
    if (run_dir / "reliability.png").is_file():
        body.append(Figure.from_file(run_dir / "reliability.png"))
    return Section("calibration", "Calibration", finding, body)


def _explanations_section(classifier, test: _TestSet, probabilities, extra) -> Section:
    from covidcxr.analysis.explain import (
        lung_saliency_fraction,
        saliency_maps,
        saliency_overlay,
        summarise_lung_fractions,
    )

    predicted = probabilities.argmax(axis=1)
    names = classifier.class_names
    chosen: list[tuple[int, str]] = []
    for label, name in enumerate(names):
        for kind, right in (("right", True), ("wrong", False)):
            members = np.flatnonzero((test.labels == label) & ((predicted == label) == right))
            chosen.extend((int(i), f"{name}, {kind}") for i in members[:GALLERY_PER_KIND])
    sample = sorted(
        set(
            np.linspace(0, len(test.images) - 1, min(SALIENCY_SAMPLE, len(test.images)))
            .astype(int)
            .tolist()
        )
        | {i for i, _ in chosen}
    )
    maps, _ = saliency_maps(classifier, [test.images[i] for i in sample])
    by_index = dict(zip(sample, maps, strict=True))
    fractions = [
        lung_saliency_fraction(by_index[i], test.masks[i]) if test.masks[i] is not None else None
        for i in sample
    ]
    measured = [(i, f) for i, f in zip(sample, fractions, strict=True) if f is not None]
    areas = {i: float(np.mean(test.masks[i] > 0)) for i, _ in measured}
    summary = (
        summarise_lung_fractions(
            [f for _, f in measured],
            [int(test.labels[i]) for i, _ in measured],
            [int(predicted[i]) for i, _ in measured],
            names,
        )
        if measured
        else None
    )
    if summary is not None:  # what a map spread evenly would put inside the lungs
        summary["lung_area"] = float(np.mean(list(areas.values())))
        summary["lung_area_per_class"] = {
            name: float(np.mean(v))
            if (v := [a for i, a in areas.items() if test.labels[i] == c])
            else None
            for c, name in enumerate(names)
        }
    extra["lung_fractions"] = summary
    coverage = (
        f"Grad-CAM was computed for {len(sample):,} of the {len(test.images):,} test images (an "
        f"even sample of up to {SALIENCY_SAMPLE} plus the gallery); {len(measured):,} of them "
        "have a lung mask, and the shares below are over those."
    )
    tiles = []
    for index, caption in chosen:
        overlay = saliency_overlay(test.images[index], by_index[index], test.masks[index])
        label = (
            f"{caption} — predicted {names[predicted[index]]} ({probabilities[index].max():.2f})"
        )
        tiles.append(Figure(_png_bytes(overlay), f"{test.samples[index].path.name}: {label}"))
    if summary is None:
        finding = (
            "Heatmaps show which parts of each image drove the prediction; the dataset has no "
            "lung masks, so their share inside the lungs is not measured. " + coverage
        )
        body = []
    else:
        share, area = summary["overall"]["mean"], summary["lung_area"]
        finding = (
            f"On average {_percent(share)} of the highlighted evidence lies inside the lungs, "
            f"which cover {_percent(area)} of these images: a map spread evenly would put "
            f"{_percent(area)} there, so the maps favour the lungs {share / area:.1f}-fold. "
            + coverage
        )
        groups = [
            (f"true {name}", group, summary["lung_area_per_class"].get(name))
            for name, group in summary["per_class"].items()
        ]
        groups += [
            ("correct predictions", summary["correct"], None),
            ("wrong predictions", summary["wrong"], None),
        ]
        rows = [
            [name, f"{group['count']:,}", _percent(group["mean"]), _percent(base)]
            for name, group, base in groups
        ]
        header = ["images", "count", "share of saliency inside the lungs", "lung area (even map)"]
        body = [Table(header, rows)]
    body.append(Gallery(tiles))
    return Section("explanations", "Where the model looks (Grad-CAM)", finding, body)


def _sources_section(test: _TestSet, probabilities, names, extra) -> Section:
    from covidcxr.analysis.probes import per_source_metrics

    result = per_source_metrics(probabilities, test.labels, [s.source for s in test.samples], names)
    extra["per_source"] = result
    rows = []
    for source, values in result["sources"].items():
        rows.append(
            [
                source,
                f"{values['num_images']:,}",
                _percent(values["accuracy"]),
                *(_percent(values["recall"].get(name)) for name in names),
            ]
        )
    body = [Table(["source", "images", "accuracy", *(f"recall {n}" for n in names)], rows)]
    return Section("sources", "Results per source", result["finding"], body)


def _probes_section(classifier, test: _TestSet, extra) -> Section:
    from covidcxr.analysis.probes import lung_probe

    have = [i for i, mask in enumerate(test.masks) if mask is not None]
    if not have:
        return Section(
            "probes",
            "Shortcut probes",
            "The test images have no lung masks, so the probes cannot black out the lungs.",
        )
    images = [test.images[i] for i in have]
    masks = [test.masks[i] for i in have]
    labels = test.labels[have]
    results = {
        mode: lung_probe(classifier, images, masks, labels, mode)
        for mode in ("lungs_removed", "lungs_only")
    }
    extra["probes"] = results
    rows = [
        [
            mode.replace("_", " "),
            f"{r['num_images']:,}",
            _percent(r["accuracy"]),
            _percent(r["chance"]["majority_rate"]),
            "yes" if r.get("flag") else "no",
        ]
        for mode, r in results.items()
    ]
    body = [
        Table(["probe", "images", "accuracy", "chance (majority class)", "flagged"], rows),
        Paragraph(results["lungs_only"]["finding"]),
    ]
    return Section("probes", "Shortcut probes", results["lungs_removed"]["finding"], body)


def _verdict_section(extra) -> Section:
    """One conclusion from the Grad-CAM shares and the lung probes, with its evidence."""
    evidence, outside = [], []
    fractions = extra.get("lung_fractions")
    if fractions:
        share, area = fractions["overall"]["mean"], fractions["lung_area"]
        favoured = share / area if area else float("nan")
        evidence.append(
            f"Grad-CAM puts {_percent(share)} of its evidence inside the lungs, which cover "
            f"{_percent(area)} of the images ({favoured:.1f}× an even spread)."
        )
        if favoured < VERDICT_MIN_FAVOUR:
            outside.append("its heatmaps favour the lungs little more than an even spread")
    probes = extra.get("probes") or {}
    removed, only = probes.get("lungs_removed"), probes.get("lungs_only")
    if removed:
        evidence.append(
            f"With the lungs blacked out it scores {_percent(removed['accuracy'])} (chance "
            f"{_percent(removed['chance']['majority_rate'])})."
        )
        if removed.get("flag"):
            outside.append("it still classifies with the lungs blacked out")
    if only and only.get("intact_accuracy") is not None:
        chance, intact = only["chance"]["majority_rate"], only["intact_accuracy"]
        kept = (only["accuracy"] - chance) / (intact - chance) if intact > chance else 1.0
        evidence.append(
            f"With only the lungs visible it scores {_percent(only['accuracy'])}, against "
            f"{_percent(intact)} on whole images: {_percent(max(0.0, kept))} of its accuracy "
            "above chance is left."
        )
        if kept < VERDICT_MIN_KEPT:
            outside.append("it loses most of its accuracy when it sees only the lungs")
    single = (extra.get("per_source") or {}).get("single_source_classes") or []
    for item in single:  # e.g. every Viral Pneumonia film paediatric, from one collection
        evidence.append(
            f"Every {item['class_name']} test image ({item['num_images']:,}) comes from "
            f"{item['source']}, and {_percent(item['source_purity'])} of that source's images "
            f"are {item['class_name']}: the source alone can give the class away."
        )
    collapsed = [e for e in extra.get("external") or [] if e["collapsed"]]
    evidence += [e["verdict"] for e in extra.get("external") or []]
    if not evidence:
        return Section(
            "verdict",
            "What this model looks at",
            "Not measured: the test images have no lung masks.",
        )
    if outside:
        finding = (
            "It depends on the image outside the lungs: "
            + "; ".join(outside)
            + ". Its accuracy says little about what it sees in the lungs."
        )
    elif fractions or removed or only:
        finding = (
            "It looks mostly at the lungs: its heatmaps favour them, it keeps most of its "
            "accuracy with only the lungs visible, and it cannot classify without them."
        )
    else:
        finding = "Where it looks is not measured: the test images have no lung masks."
    if single:
        finding += (
            " " + ", ".join(i["class_name"] for i in single) + " comes from a single source, so "
            "part of what it learned for that class may be the source."
        )
    if collapsed:
        finding += (
            f" On {len(collapsed)} external set(s) its figures collapse: the test split "
            "overstates how it does on films from elsewhere."
        )
    extra["verdict"] = {"outside": outside, "evidence": evidence}
    body: list[Block] = [Bullets(evidence)]
    return Section("verdict", "What this model looks at", finding, body)


VERDICT_MIN_FAVOUR = 1.5
"""Grad-CAM in-lung share over lung area below which the maps do not favour the lungs."""
VERDICT_MIN_KEPT = 0.5
"""Share of the above-chance accuracy a lungs-only model must keep to count as reading the lungs."""


def _external_section(run_dir: Path, metrics, external, workers, extra) -> Section:
    """Each external set scored whole (``covidcxr evaluate``) and compared with the test split."""
    from covidcxr.analysis.evaluate import compare_sets, evaluate

    if not external:
        return Section(
            "external",
            "External sets",
            "No external set given (--external DIR): the figures above are from the test split "
            "of the training data only, which says little about films from elsewhere.",
        )
    results, rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for position, folder in enumerate(external):
            scored = evaluate(run_dir, folder, Path(scratch) / str(position), workers=workers)
            result = {"name": Path(folder).name, **compare_sets(metrics, scored)}
            results.append(result)
            for name, figures in result["per_class"].items():
                rows.append(
                    [
                        f"{result['name']}: {name}",
                        *(
                            f"{_with_ci(figures[key]['value'], figures[key])} "
                            f"({_signed_points(figures[key]['difference'])})"
                            for key in ("sensitivity", "specificity", "ppv")
                        ),
                    ]
                )
    extra["external"] = results
    header = ["set: class", "sensitivity (vs test)", "specificity (vs test)", "PPV (vs test)"]
    finding = " ".join(r["verdict"] for r in results)
    return Section("external", "External sets", finding, [Table(header, rows)])


def _signed_points(difference: float | None) -> str:
    return "n/a" if difference is None else f"{100 * difference:+.1f} points"


def _roc_section(probabilities, labels, names, extra) -> Section:
    """One-vs-rest ROC curve and AUC per class, from the test split's probabilities."""
    import torch
    from torchmetrics.functional.classification import multiclass_auroc, multiclass_roc

    from covidcxr.data.figures import _figure

    scores = torch.as_tensor(np.asarray(probabilities), dtype=torch.float32)
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    count = len(names)
    present = [c for c in range(count) if (target == c).any() and (target != c).any()]
    if not present:
        return Section("roc", "ROC curves per class", "Needs test images of two classes or more.")
    fpr, tpr, _ = multiclass_roc(scores, target, num_classes=count)
    auc = multiclass_auroc(scores, target, num_classes=count, average=None)
    figure = _figure(5.5, 5)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    areas = {}
    for c in present:
        areas[names[c]] = float(auc[c])
        axes.plot(fpr[c].numpy(), tpr[c].numpy(), label=f"{names[c]} (AUC {float(auc[c]):.3f})")
    axes.set_xlabel("1 − specificity (false positive rate)")
    axes.set_ylabel("sensitivity (true positive rate)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    extra["roc_auc"] = areas
    worst = min(areas, key=areas.get)
    finding = (
        "One class against the rest, on the test split: "
        + ", ".join(f"{n} AUC {a:.3f}" for n, a in areas.items())
        + f". The weakest is {worst}."
    )
    caption = "ROC curves, one class against the rest (test split)"
    return Section("roc", "ROC curves per class", finding, [Figure(buffer.getvalue(), caption)])


def _provenance(run_dir: Path, data, card) -> dict[str, Any]:
    """Version, commit, command, date and data behind the report."""
    import subprocess
    import sys
    from datetime import datetime

    import covidcxr

    try:
        commit = subprocess.run(
            ["git", "-C", str(Path(covidcxr.__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    trained = card.training_data or {}
    return {
        "covidcxr": getattr(covidcxr, "__version__", "unknown"),
        "commit": commit or "unknown (not a git checkout)",
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "(Python API)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run": str(run_dir),
        "data": str(data) if data is not None else "(none given)",
        "trained_on": trained.get("name", "not recorded"),
        "synthetic": bool(trained.get("synthetic", False)),
    }


def _leakage_section(test: _TestSet, workers, extra) -> Section:
    from covidcxr.analysis.probes import duplicate_leakage

    result = duplicate_leakage(test.all_samples, test.all_splits, workers=workers)
    extra["leakage"] = result
    body = []
    if result.get("examples"):
        rows = [
            ["; ".join(f"{item['path']} ({item['split']})" for item in example["images"])]
            for example in result["examples"]
        ]
        body.append(Table(["near-duplicates in more than one split"], rows))
    return Section("leakage", "Leakage between splits", result["finding"], body)


# --------------------------------------------------------------------------------------------
# HTML


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _with_ci(value: float | None, interval: dict | None) -> str:
    if value is None:
        return "n/a"
    if not interval or interval.get("low") is None:
        return _percent(value)
    return f"{_percent(value)} [{100 * interval['low']:.1f}–{100 * interval['high']:.1f}]"
