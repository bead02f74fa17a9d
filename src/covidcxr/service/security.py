"""Browser-facing protection on every answer: Content-Security-Policy and friends.

:data:`POLICY` is the Content-Security-Policy of every response but the API docs page: scripts,
styles and images only from the service itself (the page's ``static/page.js`` and
``static/page.css``; ``data:`` images for the heatmaps it shows), requests only to the
service, no framing, no plugins, no ``<base>``. The Swagger UI page at ``/docs`` loads its
script and styles from where FastAPI points it and runs one inline script; its policy
(:func:`policy_for_page`) allows exactly those, by origin and by hash.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

#: Sent with every response besides the Content-Security-Policy.
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def headers_for(policy: str = POLICY) -> dict[str, str]:
    """All the security headers, with ``policy`` as the Content-Security-Policy."""
    return {"Content-Security-Policy": policy, **HEADERS}


class SecurityHeaders:
    """ASGI middleware adding :func:`headers_for` to every HTTP response; ``policies`` maps
    exact paths to their own Content-Security-Policy (others get :data:`POLICY`). Headers the
    app already set are left as they are."""

    def __init__(self, app: Any, policies: dict[str, str] | None = None) -> None:
        self.app = app
        self.encoded = {
            path: _encode(headers_for(policy)) for path, policy in (policies or {}).items()
        }
        self.default = _encode(headers_for())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.encoded.get(scope.get("path", ""), self.default)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def policy_for_page(html: str) -> str:
    """The strictest Content-Security-Policy under which ``html`` still works: its inline
    scripts allowed by their SHA-256, its external scripts and stylesheets by their origins
    (``'self'`` for relative ones), and ``'unsafe-inline'`` styles, which Swagger UI sets."""
    collected = _Resources()
    collected.feed(html)
    collected.close()
    scripts = ["'self'", *_sorted_unique(collected.script_origins), *collected.script_hashes]
    styles = ["'self'", *_sorted_unique(collected.style_origins), "'unsafe-inline'"]
    images = ["'self'", "data:", *_sorted_unique(collected.image_origins)]
    return (
        f"default-src 'none'; script-src {' '.join(scripts)}; style-src {' '.join(styles)}; "
        f"img-src {' '.join(images)}; connect-src 'self'; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


class _Resources(HTMLParser):
    """What a page loads: origins of its scripts, stylesheets and icons, hashes of its inline
    scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.script_origins: list[str] = []
        self.style_origins: list[str] = []
        self.image_origins: list[str] = []
        self.script_hashes: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "script":
            if values.get("src"):
                self.script_origins.append(_origin(values["src"]))
            else:
                self._inline = []
        elif tag == "link" and values.get("href"):
            relation = values.get("rel", "").lower().split()
            if "stylesheet" in relation:
                self.style_origins.append(_origin(values["href"]))
            elif "icon" in relation:
                self.image_origins.append(_origin(values["href"]))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            digest = hashlib.sha256("".join(self._inline).encode("utf-8")).digest()
            self.script_hashes.append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
            self._inline = None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "'self'"


def _sorted_unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values) - {"'self'"})


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
