"""Browser-facing protection: the security headers on every kind of answer, a page that works
under its Content-Security-Policy (no inline script or style; its files served), the docs
page's own policy, and the Host check with its documented defaults."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from covidcxr.service.app import ServiceSettings, create_app
from covidcxr.service.security import HEADERS, POLICY, policy_for_page
from helpers import save_untrained


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("security") / "model")


@pytest.fixture(scope="module")
def client(model: Path) -> TestClient:
    app = create_app(model, host="127.0.0.1")
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


def assert_protected(response, policy: str = POLICY) -> None:
    assert response.headers["content-security-policy"] == policy
    for name, value in HEADERS.items():
        assert response.headers[name] == value


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/health", 200),
        ("GET", "/model", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/static/page.js", 200),
        ("GET", "/favicon.ico", 204),
        ("GET", "/nowhere", 404),
        ("GET", "/predict", 405),
        ("POST", "/predict", 400),  # empty body
        ("POST", "/predict?heatmap=maybe", 422),
    ],
)
def test_every_answer_carries_the_security_headers(client, method, path, status) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert_protected(response)


def test_refusals_of_the_host_check_and_crashes_carry_them_too(client, monkeypatch) -> None:
    refused = client.get("/health", headers={"host": "rebinding.example"})
    assert refused.status_code == 400
    assert_protected(refused)

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.analyser, "analyse", crash)
    response = client.post(
        "/predict", content=b"\x89PNG\r\n\x1a\n", headers={"content-type": "image/png"}
    )
    assert response.status_code == 500
    assert "internal error" in response.json()["detail"] and "a bug" not in response.text
    assert_protected(response)


class Inline(HTMLParser):
    """What the Content-Security-Policy would block in a page: inline scripts, inline
    styles, style attributes and event-handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        values = dict(attrs)
        for name in values:
            if name == "style" or name.startswith("on"):
                self.blocked.append(f"<{tag} {name}=...>")
        if tag == "script":
            if values.get("src"):
                self.scripts.append(values["src"])
            self._in = "script"
        elif tag == "style":
            self._in = "style"
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values["href"])

    def handle_data(self, data) -> None:
        if self._in and data.strip():
            self.blocked.append(f"inline <{self._in}>")

    def handle_endtag(self, tag) -> None:
        self._in = None


def test_the_page_works_under_its_policy(client) -> None:
    page = client.get("/")
    assert "script-src 'self'" in POLICY and "style-src 'self'" in POLICY
    found = Inline()
    found.feed(page.text)
    assert found.blocked == []
    assert found.scripts == ["static/page.js"] and found.stylesheets == ["static/page.css"]
    script = client.get("/static/page.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    style = client.get("/static/page.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    # style attributes set from a script are blocked too; element.style.x = ... is not
    assert not re.search(r"setAttribute\(\s*[\"']style", script.text)
    assert "eval(" not in script.text and "innerHTML" not in script.text
    # the script fetches only the service itself (connect-src 'self'), by relative URLs
    assert "http://" not in script.text and "https://" not in script.text


def test_the_docs_page_allows_exactly_its_own_script(client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    assert_protected(docs, policy)
    inline = re.search(r"<script>(.*?)</script>", docs.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy


def test_policy_for_page_allows_origins_by_scheme_and_host() -> None:
    html = (
        '<link rel="stylesheet" href="https://assets.test/ui.css">'
        '<script src="https://assets.test/ui.js"></script><script src="local.js"></script>'
        "<script>start()</script>"
    )
    policy = policy_for_page(html)
    assert "script-src 'self' https://assets.test 'sha256-" in policy
    assert "style-src 'self' https://assets.test 'unsafe-inline'" in policy


@pytest.mark.parametrize(
    ("bound", "allowed"),
    [
        ("127.0.0.1", ["127.0.0.1", "[::1]", "localhost"]),
        ("localhost", ["127.0.0.1", "[::1]", "localhost"]),
        ("127.0.0.2", ["127.0.0.1", "127.0.0.2", "[::1]", "localhost"]),
        ("::1", ["127.0.0.1", "[::1]", "localhost"]),
        ("0.0.0.0", ["*"]),
        ("::", ["*"]),
        ("192.168.1.20", ["192.168.1.20"]),
        ("xray.hospital.example", ["xray.hospital.example"]),
        (None, ["*"]),
    ],
)
def test_default_allowed_hosts_follow_the_bound_address(bound, allowed) -> None:
    assert ServiceSettings().allowed_hosts_for(bound) == allowed


def test_configured_allowed_hosts_replace_the_default(model) -> None:
    settings = ServiceSettings(allowed_hosts=("xray.hospital.example",))
    assert settings.allowed_hosts_for("0.0.0.0") == ["xray.hospital.example"]
    client = TestClient(create_app(model, settings=settings, host="0.0.0.0"))
    assert client.get("/health", headers={"host": "xray.hospital.example:8000"}).status_code == 200
    assert client.get("/health", headers={"host": "127.0.0.1"}).status_code == 400
    with pytest.raises(ValueError, match="tuple"):
        ServiceSettings(allowed_hosts="xray.hospital.example")
    with pytest.raises(ValueError, match=r"\*\.example\.org"):
        ServiceSettings(allowed_hosts=("xray.*.example",))


def test_loopback_service_answers_its_names_only(client) -> None:
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "localhost"):
        assert client.get("/health", headers={"host": host}).status_code == 200, host
    for host in ("rebinding.example", "127.0.0.1.nip.example", "10.0.0.5:8000"):
        assert client.get("/health", headers={"host": host}).status_code == 400, host
