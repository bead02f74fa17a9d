"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright
opens the page served on loopback, uploads real X-rays through the file input, and sees the
prediction, one bar per class, the film with its heatmap layer (opacity slider, plain-film
toggle, colour bar) and the model panel (training data, test figures, warnings); a refused
file clears the last result and names itself; "100.0 %" stays on one line at any width. A
screenshot is saved as a test artefact (``$COVIDCXR_TEST_ARTIFACTS``, default
``test-artifacts/`` in the repository).

Under CI (``CI=true``) ``make test`` installs Chromium and this test must run; elsewhere it is
skipped, with the reason, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import real_images, save_untrained

CHROMIUM = os.environ.get("COVIDCXR_CHROMIUM", "/usr/bin/chromium")
ENABLE = (
    "install Debian's browser (`sudo apt-get install chromium`) and the dev extra "
    "(`pip install -e '.[dev]'`, which brings Playwright), or run `CI=true make test`, "
    "which does both"
)
# Chromium as root in a container, with no network beyond loopback: no sandbox, no GPU, none
# of the background connections that this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def browser_or_skip() -> str:
    problems = []
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        problems.append(f"Chromium not found at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright is not installed")
    if problems:
        message = f"browser test not run: {'; '.join(problems)}. To enable it, {ENABLE}."
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: this test must run)")
        pytest.skip(message)
    return CHROMIUM


#: What `covidcxr train` records for a run on phantoms (`covidcxr data phantoms`): the page
#: must show it, and the phantom warning, before any upload.
PHANTOM_TRAINING = {
    "name": "covidcxr synthetic phantoms",
    "synthetic": True,
    "generator": "covidcxr 0.1.0 data phantoms --per-class 64 --seed 0",
    "root": "/tmp/phantoms",
    "split": {
        "file": "splits.csv (in the run folder)",
        "method": "stratified by class, near-duplicate groups kept whole",
        "seed": 0,
        "counts": {
            "train": {"Normal": 48, "COVID": 48, "Viral Pneumonia": 48},
            "val": {"Normal": 8, "COVID": 8, "Viral Pneumonia": 8},
            "test": {"Normal": 8, "COVID": 8, "Viral Pneumonia": 8},
        },
    },
}
PHANTOM_METRICS = {
    "test_accuracy": 0.875,
    "test_images": 24,
    "test_per_class": {
        "Normal": {"recall": 1.0, "specificity": 0.875, "precision": 0.8},
        "COVID": {"recall": 0.75, "specificity": 1.0, "precision": 1.0},
        "Viral Pneumonia": {"recall": 0.875, "specificity": 0.9375, "precision": 0.875},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    from covidcxr.inference.artifact import CARD_FILE
    from covidcxr.service.app import create_app

    model = save_untrained(tmp_path_factory.mktemp("browser") / "model", lungs="mask")
    card_file = model / CARD_FILE
    card = json.loads(card_file.read_text(encoding="utf-8"))
    card.update(training_data=PHANTOM_TRAINING, metrics=PHANTOM_METRICS)
    card_file.write_text(json.dumps(card), encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=10)


def artefacts() -> Path:
    root = Path(__file__).resolve().parents[2]
    folder = Path(os.environ.get("COVIDCXR_TEST_ARTIFACTS", root / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def opened(server: str, width: int = 1280, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """The page in a fresh headless Chromium, and the list its script errors and
    Content-Security-Policy violations go to (the tests expect it to stay empty)."""
    from playwright.sync_api import sync_playwright

    executable = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    "Content Security Policy" in message.text and problems.append(message.text)
                ),
            )
            page.goto(server)
            yield page, problems
        finally:
            browser.close()


def upload(page: Any, path: Path) -> None:
    """Choose ``path`` in the file input and wait until the page has the service's answer."""
    from playwright.sync_api import expect

    page.set_input_files("#file", str(path))
    expect(page.locator("#status")).not_to_contain_text("Analysing", timeout=30_000)


def lines_of(page: Any, selector: str) -> list[int]:
    """How many lines the text of each element matching ``selector`` takes."""
    return page.locator(selector).evaluate_all(
        """elements => elements.map(element => {
            const range = document.createRange();
            range.selectNodeContents(element);
            return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size;
        })"""
    )


def test_upload_through_the_page_shows_prediction_and_heatmap(server, real_dataset) -> None:
    from playwright.sync_api import expect

    xray = real_images(real_dataset)[0]
    with opened(server) as (page, problems):
        expect(page.locator("#notice")).to_contain_text("not a diagnostic device")
        # what the model has seen and how it scored is said before any upload
        model = page.locator("#model-info")
        expect(model).to_contain_text("tiny-cnn")
        expect(model).to_contain_text("covidcxr synthetic phantoms")
        expect(model).to_contain_text("synthetic phantoms, no real X-ray")
        expect(model).to_contain_text("144 images · Normal 48 · COVID 48 · Viral Pneumonia 48")
        expect(model).to_contain_text("87.5 % on 24 held-out images")
        expect(model).to_contain_text("Normal 100.0 % · COVID 75.0 % · Viral Pneumonia 87.5 %")
        expect(model).to_contain_text("Out-of-distribution check")
        expect(model).to_contain_text("none: a film unlike the training films is not flagged")
        expect(page.locator("#model-warning")).to_contain_text("synthetic phantoms only")
        upload(page, xray)
        expect(page.locator("#predicted")).not_to_be_empty()
        predicted = page.locator("#predicted").inner_text()
        assert predicted in {"Normal", "COVID", "Viral Pneumonia"}
        expect(page.locator("#result-file")).to_have_text(xray.name)
        expect(page.locator("#bars .bar")).to_have_count(3)
        expect(page.locator("#bars .bar.top")).to_have_attribute("data-class", predicted)
        for layer in ("#film", "#heatmap", "#outline"):
            expect(page.locator(layer)).to_be_visible()
            assert page.locator(layer).get_attribute("src").startswith("data:image/png;base64,")
            width = page.locator(layer).evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 0
        expect(page.locator("#heatmap-caption")).to_contain_text("lungs")
        expect(page.locator("#error")).to_be_hidden()
        # the colour bar explains the scale
        expect(page.locator("#legend-scale")).to_be_visible()
        scale = page.locator("#legend-scale")
        assert "linear-gradient" in scale.evaluate("e => getComputedStyle(e).backgroundImage")
        assert scale.bounding_box()["width"] > 100
        expect(page.locator("#legend")).to_contain_text("low")
        expect(page.locator("#legend")).to_contain_text("high")
        expect(page.locator("#legend")).to_contain_text(f"Grad-CAM evidence for {predicted}")
        # the slider fades the heatmap down to the plain film; the toggle flips between them
        heatmap, viewer = page.locator("#heatmap"), page.locator("#viewer")
        opacity = "e => getComputedStyle(e).opacity"
        page.locator("#heatmap-opacity").fill("100")
        assert heatmap.evaluate(opacity) == "1"
        with_heatmap = viewer.screenshot()
        page.locator("#heatmap-opacity").fill("0")
        assert heatmap.evaluate(opacity) == "0"
        expect(page.locator("#plain-film")).to_have_attribute("aria-pressed", "true")
        assert viewer.screenshot() != with_heatmap
        page.locator("#heatmap-opacity").fill("40")
        assert heatmap.evaluate(opacity) == "0.4"
        expect(page.locator("#heatmap-opacity-value")).to_have_text("40\u00a0%")
        page.locator("#plain-film").click()
        assert heatmap.evaluate(opacity) == "0"
        page.locator("#plain-film").click()
        assert heatmap.evaluate(opacity) == "0.4"
        expect(page.locator("#plain-film")).to_have_attribute("aria-pressed", "false")
        page.locator("#show-outline").uncheck()
        assert page.locator("#outline").evaluate(opacity) == "0"
        page.screenshot(path=str(artefacts() / "service-page.png"), full_page=True)
        assert problems == []


def test_a_certain_answer_stays_on_one_line_at_any_width(server, real_dataset) -> None:
    """The issue's "COVID 100.0 %": the widest figure the page shows must never wrap."""
    from playwright.sync_api import expect

    def certain(route: Any) -> None:
        answer = route.fetch().json()
        answer.update(predicted="COVID", confidence=1.0, calibrated=False)
        answer["probabilities"] = {"Normal": 0.0, "COVID": 1.0, "Viral Pneumonia": 0.0}
        route.fulfill(json=answer)

    with opened(server) as (page, problems):
        page.route("**/predict?*", certain)
        upload(page, real_images(real_dataset)[0])
        expect(page.locator("#confidence")).to_have_text("Confidence 100.0\u00a0%")
        for width in (1280, 800, 480, 360, 320):
            page.set_viewport_size({"width": width, "height": 900})
            assert lines_of(page, "#confidence .pct") == [1], width
            assert lines_of(page, "#bars .value") == [1, 1, 1], width
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert problems == []


def test_the_page_shows_the_services_refusal(server, tmp_path) -> None:
    from playwright.sync_api import expect

    note = tmp_path / "notes.txt"
    note.write_text("not an X-ray")
    with opened(server) as (page, problems):
        upload(page, note)
        expect(page.locator("#error")).to_contain_text("not a PNG, JPEG or DICOM")
        expect(page.locator("#error")).to_contain_text("notes.txt")
        expect(page.locator("#result")).to_be_hidden()
        assert problems == []


def test_each_upload_replaces_the_last_result(server, real_dataset, tmp_path) -> None:
    """Good, bad, good: the refusal leaves nothing of the first film on the page and names
    the refused file; the second film's answer then replaces the refusal."""
    from playwright.sync_api import expect

    first, second = real_images(real_dataset)[0], real_images(real_dataset)[-1]
    bad = tmp_path / "bad-scan.txt"
    bad.write_text("not an X-ray")
    with opened(server) as (page, problems):
        upload(page, first)
        expect(page.locator("#result-file")).to_have_text(first.name)
        expect(page.locator("#bars .bar")).to_have_count(3)
        first_film = page.locator("#film").get_attribute("src")
        assert first_film

        upload(page, bad)
        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("bad-scan.txt")
        expect(error).to_contain_text("not a PNG, JPEG or DICOM")
        expect(page.locator("#result")).to_be_hidden()
        expect(page.locator("#predicted")).to_be_empty()
        expect(page.locator("#confidence")).to_be_empty()
        expect(page.locator("#bars .bar")).to_have_count(0)
        expect(page.locator("#heatmap-figure")).to_be_hidden()
        for layer in ("#film", "#heatmap", "#outline"):
            assert page.locator(layer).get_attribute("src") is None, layer
        expect(page.locator("#result-file")).to_be_empty()
        expect(page.locator("#status")).not_to_contain_text(first.name)

        upload(page, second)
        expect(error).to_be_hidden()
        expect(page.locator("#result")).to_be_visible()
        expect(page.locator("#result-file")).to_have_text(second.name)
        expect(page.locator("#predicted")).not_to_be_empty()
        expect(page.locator("#bars .bar")).to_have_count(3)
        expect(page.locator("#heatmap")).to_be_visible()
        second_film = page.locator("#film").get_attribute("src")
        assert second_film and second_film != first_film
        # the session's list, newest first, the refused file marked as such
        items = page.locator("#history li")
        expect(items).to_have_count(3)
        expect(items.nth(0)).to_contain_text(second.name)
        expect(items.nth(1)).to_contain_text("bad-scan.txt")
        expect(items.nth(1)).to_have_class("failed")
        expect(items.nth(2)).to_contain_text(first.name)
        expect(items.nth(2)).to_contain_text(" %")
        assert problems == []
