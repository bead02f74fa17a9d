"""Train every pretrained model covidcxr ships, on real films, on a CPU; write a results table.

    python recipes/zoo.py --lundis SNAPSHOT --paediatric SNAPSHOT --vp-masks SNAPSHOT \\
        --work ~/zoo [--sample ../shared/data/real-sample] [--ship] [--only STEP ...]

(``make zoo LUNDIS=... PAEDIATRIC=... VP_MASKS=...`` runs the same.) The snapshots are the
public copies named in ``recipes/real_data.py``, which lays them out first. Every step runs the
``covidcxr`` command a user would type, records its wall time in ``WORK/timings.json`` and is
skipped when its output already exists, so a killed recipe resumes where it stopped. Steps:

======================  ==========================================================================
layout                  ``recipes/real_data.py`` -> WORK/data/classify, WORK/data/segment
split                   one grouped, stratified 70/10/20 split of the classification set
seed-cnn-paper          the paper's CNN with the paper's protocol (``--preset paper``)
seed-cnn                the same CNN with covidcxr's defaults
seed-cnn-augment        the same with ``--augment``
efficientnet-lite0      ImageNet EfficientNet-Lite0, last parts fine-tuned, augmented
unet-lite               lung U-Net on the odd-numbered Viral Pneumonia masks, augmented
ship                    (``--ship``) copy the models into ``src/covidcxr/zoo`` (float16 weights),
                        re-score the copies on the test split, write their cards
sample                  the shipped (or trained) models on the real sample (held out)
table                   WORK/results.md and results.json
======================  ==========================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "src" / "covidcxr" / "zoo"
COVIDCXR = [sys.executable, "-m", "covidcxr"]

# (step, registry model, zoo name, extra flags) for the classifiers; the first shipped one
# that is listed in DEFAULTS serves by default.
CLASSIFIERS = (
    ("seed-cnn-paper", "seed-cnn", None, ["--preset", "paper"]),
    ("seed-cnn", "seed-cnn", "seed-cnn-db", []),
    # the paper's second model; not shipped: on this split it did worse than without (README)
    ("seed-cnn-augment", "seed-cnn", None, ["--augment"]),
    (
        "efficientnet-lite0",
        "efficientnet-lite0",
        "efficientnet-lite0-db",
        ["--config", REPO / "recipes" / "efficientnet-lite0-db.yaml"],
    ),
)
SEGMENTERS = (
    (
        "unet-lite",
        "unet-lite",
        "unet-lite-db",
        ["--augment", "--epochs", "60", "--batch-size", "16", "--patience", "10"],
    ),
)
DEFAULTS = {"default_classifier": "efficientnet-lite0-db", "default_segmenter": "unet-lite-db"}

PAPER = {  # Agarwal & Srivastava, on their own split of the whole database
    "seed-cnn-paper": "91.55 %",
    "seed-cnn": "91.55 %",
    "seed-cnn-augment": "91.39 %",
    "efficientnet-lite0": "VGG16: 94.35–94.62 % (validation)",
}
PEERS = (
    "Database authors (Chowdhury et al. 2020, DenseNet201, image-level split): ~98 % accuracy, "
    "98 % COVID sensitivity; Rahman et al. 2021 U-Net lung segmentation: Dice ≈ 0.97."
)


class Recipe:
    def __init__(self, args: argparse.Namespace) -> None:
        for key in ("lundis", "paediatric", "vp_masks"):  # the steps run from the repository
            setattr(args, key, getattr(args, key).expanduser().resolve())
        args.sample = [p.expanduser().resolve() for p in args.sample]
        self.args = args
        self.work = args.work.expanduser().resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.timings_file = self.work / "timings.json"
        self.timings = (
            json.loads(self.timings_file.read_text()) if self.timings_file.is_file() else {}
        )
        self.env = {**os.environ, "COVIDCXR_CACHE_DIR": str(self.work / "cache")}
        self.code_file = self.work / "code.json"
        self.code = json.loads(self.code_file.read_text()) if self.code_file.is_file() else {}

    @property
    def classify(self) -> Path:
        return self.work / "data" / "classify"

    @property
    def segment(self) -> Path:
        return self.work / "data" / "segment"

    def wanted(self, step: str) -> bool:
        """Whether ``--only`` asks for ``step`` (``ship-NAME`` and ``sample-NAME`` go with
        ``ship`` and ``sample``)."""
        family = step.split("-", 1)[0] if step.startswith(("ship-", "sample-")) else step
        return not self.args.only or step in self.args.only or family in self.args.only

    def run(self, step: str, command: list[str], done: Path) -> None:
        """Run ``command`` unless ``done`` exists; record its wall time under ``step``."""
        if not self.wanted(step):
            return
        if done.exists() and not self.args.force:
            print(f"[{step}] done already ({done})", flush=True)
            return
        print(f"[{step}] {' '.join(map(str, command))}", flush=True)
        self.code[step] = code_state()
        self.code_file.write_text(json.dumps(self.code, indent=2))
        started = time.perf_counter()
        subprocess.run([str(c) for c in command], check=True, env=self.env, cwd=REPO)
        seconds = round(time.perf_counter() - started, 1)
        self.timings[step] = seconds
        self.timings_file.write_text(json.dumps(self.timings, indent=2))
        print(f"[{step}] {seconds:.0f} s", flush=True)

    def layout(self) -> None:
        command = [
            sys.executable,
            REPO / "recipes" / "real_data.py",
            "--lundis",
            self.args.lundis,
            "--paediatric",
            self.args.paediatric,
            "--vp-masks",
            self.args.vp_masks,
            "--out",
            self.work / "data",
        ]
        for reference in self.args.sample:
            command += ["--exclude-like", reference]
        self.run("layout", command, self.classify)

    def split(self) -> None:
        out = self.work / "splits.csv"
        self.run("split", [*COVIDCXR, "data", "split", self.classify, "--out", out, "-q"], out)

    def train(self) -> None:
        for step, model, _, flags in CLASSIFIERS:
            run = self.work / "runs" / step
            command = [*COVIDCXR, "train", "--data", self.classify, "--model", model]
            command += ["--split", self.work / "splits.csv", "--out", run, *flags]
            self.run(step, [*command, *self.quiet], run / "metrics.json")
        for step, model, _, flags in SEGMENTERS:
            run = self.work / "runs" / step
            command = [*COVIDCXR, "segment", "train", "--data", self.segment, "--model", model]
            self.run(step, [*command, "--out", run, *flags, *self.quiet], run / "metrics.json")

    @property
    def quiet(self) -> list[str]:
        return ["--quiet"] if self.args.quiet else []

    def ship(self) -> None:
        """Copy each trained model into the package (float16 weights), then score the copy
        on the test split so the card's figures are those of the shipped weights."""
        if not (self.args.ship and self.wanted("ship")):
            return
        shipped = []
        for step, _, name, _ in (*CLASSIFIERS, *SEGMENTERS):
            if name is None:
                continue
            source = self.work / "runs" / step / "model"
            if source.is_dir():
                ship_model(source, ZOO / name, name, self.provenance(step))
            elif (ZOO / name / "model.json").is_file():  # run folder cleaned: re-score only
                print(f"[ship] {source} is gone; re-scoring the shipped {name}", flush=True)
            else:
                print(f"[ship] {step} has not been trained; {name} not shipped", flush=True)
                continue
            shipped.append((step, name))
        index = {"models": [name for _, name in shipped], **DEFAULTS}
        (ZOO / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        for step, name in shipped:  # now loadable by name: score the shipped copies
            scored = self.work / "shipped" / name
            shutil.rmtree(scored, ignore_errors=True)
            if any(step == classifier[0] for classifier in CLASSIFIERS):
                splits = self.work / "splits.csv"
                refit_reference(ZOO / name, self.classify, splits, self.work / "cache")
                command = [*COVIDCXR, "evaluate", name, "--data", self.classify]
                command += ["--split", self.work / "splits.csv", "--out", scored]
            else:
                split_file = self.work / "runs" / step / "splits.csv"
                if not split_file.is_file():  # run folder cleaned: the same seeded split again
                    split_file = self.work / f"splits-{step}.csv"
                    split = [*COVIDCXR, "data", "split", self.segment, "--out", split_file, "-q"]
                    self.run(f"ship-{name}", split, split_file)
                command = [*COVIDCXR, "segment", "evaluate", name, "--data", self.segment]
                command += ["--split", split_file, "--out", scored]
            self.run(f"ship-{name}", [*command, *self.quiet], scored / "metrics.json")
            record_shipped_figures(ZOO / name, scored / "metrics.json")

    def provenance(self, step: str) -> dict:
        """Where the step's model came from: the code as it was when the step ran (recorded by
        :meth:`run` in ``WORK/code.json``), else as it is now, said so."""
        code = self.code.get(step) or {**code_state(), "recorded": "at ship time"}
        return {
            "recipe": "recipes/zoo.py",
            "step": step,
            "covidcxr_commit": code["commit"],
            "covidcxr_uncommitted_changes": code["dirty"],
            **({"code_recorded": code["recorded"]} if "recorded" in code else {}),
            "train_seconds_2_core_cpu": self.timings.get(step),
        }

    def sample(self) -> None:
        for reference in self.args.sample:
            for step, _, name, _ in CLASSIFIERS:
                model = self.sample_model(step, name)
                if model is None:
                    continue
                out = self.work / "sample" / step
                command = [*COVIDCXR, "evaluate", model, "--data", reference, "--out", out]
                self.run(f"sample-{step}", [*command, *self.quiet], out / "metrics.json")
            for step, _, name, _ in SEGMENTERS:
                model = self.sample_model(step, name)
                if model is None:
                    continue
                out = self.work / "sample" / step
                command = [*COVIDCXR, "segment", "evaluate", model, "--data", reference]
                self.run(f"sample-{step}", [*command, "--out", out], out / "metrics.json")

    def sample_model(self, step: str, name: str | None) -> str | Path | None:
        """The shipped copy by name, else the run's model; None (said) when neither exists."""
        if name and (ZOO / name).is_dir():
            return name
        if (self.work / "runs" / step / "model").is_dir():
            return self.work / "runs" / step / "model"
        if self.wanted(f"sample-{step}"):
            print(f"[sample-{step}] no model: {step} has not been trained", flush=True)
        return None

    def table(self) -> None:
        rows, lines = [], []
        lines.append(
            "| model | shipped as | test accuracy (95 % CI) | COVID recall | "
            "VP recall | epochs (best) | train time | paper |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for step, _, name, _ in CLASSIFIERS:
            metrics = self.run_metrics(step, name)
            if metrics is None:
                continue
            test = metrics["test"]
            interval = (metrics.get("test_intervals") or {}).get("accuracy", {})
            ci = (
                f" ({100 * interval['low']:.1f}–{100 * interval['high']:.1f})"
                if interval.get("low") is not None
                else ""
            )
            per_class = test["per_class"]
            row = {
                "step": step,
                "shipped_as": name,
                "test_accuracy": metrics["test_accuracy"],
                "test_accuracy_ci": [interval.get("low"), interval.get("high")],
                "covid_recall": per_class["COVID"]["recall"],
                "vp_recall": per_class["Viral Pneumonia"]["recall"],
                "epochs": metrics["epochs_run"],
                "best_epoch": metrics["best_epoch"],
                "seconds": self.timings.get(step),
                "sample": self.sample_figure(step),
                "paediatric_normals": self.paediatric_figure(name),
            }
            rows.append(row)
            lines.append(
                f"| {step} | {name or '—'} | {100 * row['test_accuracy']:.2f} %{ci} | "
                f"{100 * row['covid_recall']:.1f} % | {100 * row['vp_recall']:.1f} % | "
                f"{row['epochs']} ({row['best_epoch']}) | {_minutes(row['seconds'])} | "
                f"{PAPER.get(step, '')} |"
            )
        for step, _, name, _ in SEGMENTERS:
            metrics = self.run_metrics(step, name)
            if metrics is None:
                continue
            rows.append(
                {
                    "step": step,
                    "shipped_as": name,
                    "test_dice": metrics["test_dice"],
                    "test_hd95": metrics["test_hd95"],
                    "seconds": self.timings.get(step),
                    "sample": self.sample_figure(step),
                }
            )
            lines.append(
                f"| {step} | {name} | Dice {metrics['test_dice']:.4f}, HD95 "
                f"{metrics['test_hd95']:.1f} px (VP test split) | | | {metrics['epochs_run']} "
                f"({metrics['best_epoch']}) | {_minutes(self.timings.get(step))} | |"
            )
        lines += ["", PEERS, ""]
        children = [
            f"- {row['shipped_as']}: {row['paediatric_normals']}"
            for row in rows
            if row.get("paediatric_normals")
        ]
        if children:
            lines += ["Paediatric normals of the test split (the 'child' shortcut):", *children, ""]
        sample_lines = [f"- {row['step']}: {row['sample']}" for row in rows if row.get("sample")]
        if sample_lines:
            lines += ["On the real sample (held out of all training):", *sample_lines]
        for row in rows:  # the shipped models' own cards, with what was measured here
            folder = ZOO / str(row["shipped_as"])
            if row["shipped_as"] and (folder / "model.json").is_file():
                measured = []
                if row.get("paediatric_normals"):
                    measured.append(
                        f"Paediatric normals of the test split: {row['paediatric_normals']}."
                    )
                if row.get("sample"):
                    measured.append(
                        "The real sample (../shared/data/real-sample, 44 films, 30 with lung "
                        f"masks, from other collections; never trained on): {row['sample']}."
                    )
                write_model_readme(folder, measured)
        (self.work / "results.md").write_text("\n".join(lines) + "\n")
        (self.work / "results.json").write_text(
            json.dumps({"rows": rows, "timings": self.timings}, indent=2)
        )
        print("\n".join(lines))

    def run_metrics(self, step: str, name: str | None) -> dict | None:
        """The training run's metrics; when its folder was cleaned, the shipped card's."""
        metrics_file = self.work / "runs" / step / "metrics.json"
        if metrics_file.is_file():
            return json.loads(metrics_file.read_text())
        card_file = ZOO / str(name) / "model.json"
        if name is None or not card_file.is_file():
            return None
        card = json.loads(card_file.read_text())
        metrics = dict(card["metrics"])
        metrics.setdefault("epochs_run", "?")
        metrics.setdefault("best_epoch", "?")
        if card["task"] == "classification":
            metrics["test"] = {"per_class": metrics.get("test_per_class", {})}
        provenance = card.get("training_data", {}).get("provenance", {})
        self.timings.setdefault(step, provenance.get("train_seconds_2_core_cpu"))
        return metrics

    def paediatric_figure(self, name: str | None) -> str | None:
        """How the shipped model treats the test split's paediatric normals: the shortcut
        "child = viral pneumonia" shows as normals called Viral Pneumonia."""
        predictions = self.work / "shipped" / str(name) / "predictions.csv"
        if name is None or not predictions.is_file():
            return None
        import csv

        with predictions.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if "Normal-paediatric-" in r["path"]]
        called = sum(r["predicted"] == "Viral Pneumonia" for r in rows)
        right = sum(r["predicted"] == "Normal" for r in rows)
        return f"{right} of {len(rows)} right, {called} called Viral Pneumonia"

    def sample_figure(self, step: str) -> str | None:
        metrics_file = self.work / "sample" / step / "metrics.json"
        if not metrics_file.is_file():
            return None
        metrics = json.loads(metrics_file.read_text())
        if "dice" in metrics:
            return f"Dice {metrics['dice']:.4f} on {metrics['num_images']} masked images"
        test = metrics["test"]
        right = sum(test["confusion_matrix"][i][i] for i in range(len(test["confusion_matrix"])))
        return f"{right} of {test['num_samples']} right ({100 * test['accuracy']:.1f} %)"


def code_state() -> dict:
    """The repository's commit and whether tracked files differ from it."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"commit": commit or None, "dirty": bool(dirty)}


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def ship_model(source: Path, target: Path, name: str, provenance: dict) -> None:
    """Copy a saved model into the zoo with float16 weights and a card naming it."""
    from safetensors.torch import load_file

    from covidcxr.tensorfile import save_tensors

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for folder in [source, *[p for p in source.iterdir() if p.is_dir()]]:
        destination = target / folder.relative_to(source)
        destination.mkdir(exist_ok=True)
        for file in folder.iterdir():
            if file.name == "model.safetensors":
                state = load_file(str(file))
                half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
                save_tensors(destination / file.name, half, metadata={"stored": "float16"})
            elif file.is_file() and file.suffix in (".json", ".safetensors"):
                shutil.copy2(file, destination / file.name)
    card_file = target / "model.json"
    card = json.loads(card_file.read_text())
    card["name"] = name
    card["licence"] = (
        "Weights: Apache-2.0 (covidcxr). Trained on the COVID-19 Radiography Database, whose "
        "README states no licence: research use only; cite Chowdhury et al., IEEE Access 8 "
        "(2020) 132665, and Rahman et al., arXiv:2012.02238."
    )
    from covidcxr.inference.artifact import INTENDED_USE

    card["intended_use"] = INTENDED_USE
    card["training_data"]["provenance"] = provenance
    card["training_data"]["root"] = "(the recipe's work folder)"
    card_file.write_text(json.dumps(card, indent=2) + "\n")


def refit_reference(folder: Path, data: Path, split_file: Path, cache: Path | None = None) -> None:
    """Fit the out-of-distribution reference again on the shipped weights (float16-stored):
    features and images of the training split, thresholds on the validation split."""
    import torch

    from covidcxr.data.cache import ImageCache
    from covidcxr.data.layouts import discover
    from covidcxr.data.splits import read_split_csv
    from covidcxr.inference.artifact import load_model
    from covidcxr.inference.batched import extract_features
    from covidcxr.inference.ood import OOD_FILE, fit_reference

    classifier = load_model(folder)
    samples, splits = read_split_csv(split_file, discover(data).root)
    size = (classifier.card.input_size,) * 2
    parts = {}
    for name in ("train", "val"):
        paths = [s.path for s, split in zip(samples, splits, strict=True) if split == name]
        batch = ImageCache(cache).get_many(paths, size)
        if not batch.ok.all():
            print(f"[ship] {int((~batch.ok).sum())} unreadable {name} images left out", flush=True)
        images = torch.from_numpy(batch.array[batch.ok]).unsqueeze(1)
        card = classifier.card
        features = extract_features(classifier.network, images, card.mean, card.std)
        parts[name] = (features.numpy(), images)
    reference = fit_reference(
        parts["train"][0], parts["val"][0], parts["train"][1], parts["val"][1]
    )
    reference.save(folder / OOD_FILE)
    card_file = folder / "model.json"
    card = json.loads(card_file.read_text())
    card["ood"] = reference.summary()
    card_file.write_text(json.dumps(card, indent=2) + "\n")


def record_shipped_figures(folder: Path, metrics_file: Path) -> None:
    """Put the shipped weights' own test figures into the card."""
    if not metrics_file.is_file():
        return
    metrics = json.loads(metrics_file.read_text())
    card_file = folder / "model.json"
    card = json.loads(card_file.read_text())
    if "dice" in metrics:
        card["metrics"].update(
            {"test_dice": metrics["dice"], "test_iou": metrics["iou"], "test_hd95": metrics["hd95"]}
        )
    else:
        test = metrics["test"]
        card["metrics"].update(
            {
                "test_accuracy": metrics["test_accuracy"],
                "test_images": test["num_samples"],
                "test_per_class": {
                    n: {k: s[k] for k in ("recall", "specificity", "precision")}
                    for n, s in test["per_class"].items()
                },
                "test_macro_f1": test["macro_f1"],
                "test_intervals": metrics["test_intervals"],
            }
        )
    card["metrics"]["measured_on"] = "the shipped float16-stored weights, test split of the recipe"
    card_file.write_text(json.dumps(card, indent=2) + "\n")


def write_model_readme(folder: Path, measured: list[str] = ()) -> None:
    """A Markdown model card beside model.json, for people; ``measured`` adds figures the
    recipe measured beyond the test split (paediatric normals, the real sample)."""
    card = json.loads((folder / "model.json").read_text())
    data = card.get("training_data", {})
    metrics = card.get("metrics", {})
    lines = [f"# {card['name']}", ""]
    lines.append(
        f"Architecture `{card['model']}` ({card['task']}), input "
        f"{card['input_size']}×{card['input_size']}."
    )
    lines.append("")
    lines.append("## Trained on")
    lines.append(f"{data.get('name', 'unknown')}.")
    for repo, source in (data.get("sources") or {}).items():
        lines.append(f"- `{repo}` at commit `{source.get('commit')}`: {source.get('read')}")
    split = data.get("split", {})
    for name, counts in (split.get("counts") or {}).items():
        lines.append(f"- {name}: " + ", ".join(f"{n:,} {c}" for c, n in counts.items() if n))
    for reason, count in (data.get("excluded_counts") or {}).items():
        lines.append(f"- left out: {count} ({reason})")
    lines += ["", "## Test figures (held-out split of the same copies)"]
    if card["task"] == "segmentation":
        lines.append(
            f"Dice {metrics.get('test_dice', float('nan')):.4f}, HD95 "
            f"{metrics.get('test_hd95', float('nan')):.1f} px, each mask compared at its "
            "image's own size."
        )
    else:
        intervals = metrics.get("test_intervals", {})
        accuracy = intervals.get("accuracy", {})
        lines.append(
            f"Accuracy {100 * metrics['test_accuracy']:.2f} % (95 % CI "
            f"{100 * accuracy.get('low', float('nan')):.1f}–"
            f"{100 * accuracy.get('high', float('nan')):.1f}) on "
            f"{metrics.get('test_images')} images."
        )
        for name, scores in metrics.get("test_per_class", {}).items():
            lines.append(
                f"- {name}: sensitivity {100 * scores['recall']:.1f} %, specificity "
                f"{100 * scores['specificity']:.1f} %"
            )
    if measured:
        lines += ["", "## Measured beyond the test split", *[f"- {m}" for m in measured]]
    lines += ["", "## What it can and cannot tell apart", *LIMITATIONS[card["task"]], ""]
    lines += [
        "## Intended use and licence",
        card.get("intended_use", ""),
        "",
        card.get("licence", ""),
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines))


LIMITATIONS = {
    "classification": [
        "- Every Viral Pneumonia film it saw is paediatric (Kermany); paediatric normals were "
        "in training too, so 'child' alone does not mean 'viral pneumonia', but an adult viral "
        "pneumonia is a film it has never seen: expect it to be missed.",
        "- COVID films come from other hospitals than the normals (RSNA) in this database: part "
        "of what separates them may be the source, not the disease. Evaluate on your own films.",
        "- Three classes only: bacterial pneumonia, lung opacity, effusion… are not classes; it "
        "will call them one of the three. The out-of-distribution flag catches only films far "
        "from all its training films.",
    ],
    "segmentation": [
        "- Trained on paediatric lung masks only (the database's Viral Pneumonia masks), with "
        "zoom, rotation and exposure augmentation to reach adult films; measured on the real "
        "sample's adult films in the README.",
        "- Outlines the lung fields, not the parts hidden behind the heart or diaphragm.",
    ],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lundis", type=Path, required=True)
    parser.add_argument("--paediatric", type=Path, required=True)
    parser.add_argument("--vp-masks", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="data, runs and results here")
    parser.add_argument(
        "--sample",
        type=Path,
        action="append",
        default=[],
        help="held-out real images: left out of training, scored at the end",
    )
    parser.add_argument("--ship", action="store_true", help="copy the models into the package")
    parser.add_argument("--only", nargs="*", default=[], help="run only these steps")
    parser.add_argument("--force", action="store_true", help="rerun steps that are done")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    recipe = Recipe(args)
    recipe.layout()
    recipe.split()
    recipe.train()
    recipe.ship()
    recipe.sample()
    if recipe.wanted("table"):
        recipe.table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
