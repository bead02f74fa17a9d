"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright
opens the page served on loopback, uploads a real X-ray through the file input, and sees the
prediction, one bar per class and the heatmap. A screenshot is saved as a test artefact
(``$COVIDCXR_TEST_ARTIFACTS``, default ``test-artifacts/`` in the repository).

Under CI (``CI=true``) ``make test`` installs Chromium and this test must run; elsewhere it is
skipped, with the reason, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    from covidcxr.service.app import create_app

    model = save_untrained(tmp_path_factory.mktemp("browser") / "model", lungs="mask")
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


def test_upload_through_the_page_shows_prediction_and_heatmap(server, real_dataset) -> None:
    executable = browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    xray = real_images(real_dataset)[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server)
            expect(page.locator("#notice")).to_contain_text("not a diagnostic device")
            expect(page.locator("#model-info")).to_contain_text("tiny-cnn")
            # what the model has seen is said before any upload: here, nothing at all
            expect(page.locator("#model-warning")).to_contain_text("untrained")
            expect(page.locator("#model-info")).to_contain_text("Trained on")
            page.set_input_files("#file", str(xray))
            expect(page.locator("#predicted")).not_to_be_empty(timeout=30_000)
            predicted = page.locator("#predicted").inner_text()
            assert predicted in {"Normal", "COVID", "Viral Pneumonia"}
            expect(page.locator("#bars .bar")).to_have_count(3)
            expect(page.locator("#bars .bar.top")).to_have_attribute("data-class", predicted)
            heatmap = page.locator("#heatmap")
            expect(heatmap).to_be_visible()
            width = heatmap.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 0
            assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
            expect(page.locator("#heatmap-caption")).to_contain_text("lungs")
            expect(page.locator("#error")).to_be_hidden()
            page.screenshot(path=str(artefacts() / "service-page.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


def test_the_page_shows_the_services_refusal(server, tmp_path) -> None:
    executable = browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    note = tmp_path / "notes.txt"
    note.write_text("not an X-ray")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.set_input_files("#file", str(note))
            expect(page.locator("#error")).to_contain_text("not a PNG, JPEG or DICOM")
            expect(page.locator("#result")).to_be_hidden()
        finally:
            browser.close()
