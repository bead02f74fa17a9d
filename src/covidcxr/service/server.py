"""How uvicorn runs the service: its limits on slow clients and its logging.

uvicorn closes a kept-alive connection that stays idle (``timeout_keep_alive``) and caps the
size of request headers (``h11_max_incomplete_event_size``), but it has no deadline for the
headers themselves: a client sending one header byte a second keeps its connection forever.
:func:`header_deadline_protocol` adds one to uvicorn's h11 protocol. Bodies have their own
deadline in the app (:class:`~covidcxr.service.uploads.BodyPace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import logging
import socket
import warnings
from typing import Any

from covidcxr.service.settings import MAX_HEADER_BYTES, ServiceSettings

#: Where the service logs (through uvicorn's handler under ``covidcxr serve``).
LOGGER = "covidcxr.service"

#: Seconds an idle kept-alive connection stays open (uvicorn's default, stated).
KEEP_ALIVE_S = 5


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline: a connection whose request line and headers are
    not complete ``timeout_s`` after it opened (or after the previous answer on it) is closed,
    however slowly bytes keep coming, and one line is logged."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    log = logging.getLogger(LOGGER)

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _watch_headers(self) -> None:
            # h11 reports the client IDLE until a request's headers are complete.
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)
            elif not waiting:
                self._stop_header_timer()

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            log.info(
                "closed a connection from %s: no complete request headers within %g s",
                _address(self.client),
                timeout_s,
            )
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    return HeaderDeadlineProtocol


def keep_uploads_out_of_logs() -> None:
    """Silence pydicom's warnings and its logger: they quote header values they find odd, and
    in a damaged header such a value can run on into the patient's name. Process-wide, so
    :func:`~covidcxr.service.app.serve` calls it, not ``create_app``."""
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").disabled = True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with the service's own logger on its handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][LOGGER] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def server_config(app: Any, settings: ServiceSettings, host: str, port: int, **options: Any) -> Any:
    """The ``uvicorn.Config`` that :func:`~covidcxr.service.app.serve` runs ``app`` with;
    ``options`` override uvicorn's arguments (tests pass ``log_config=None``)."""
    import uvicorn

    arguments: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": header_deadline_protocol(settings.header_timeout_s),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "log_config": log_config(),
        "log_level": "info",
        "access_log": True,
    }
    arguments.update(options)
    return uvicorn.Config(app, **arguments)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening, for uvicorn to serve on. Raises
    ``OSError`` naming the address when it cannot be had (taken, or not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno,
            f"cannot listen on {host}:{port}: {error.strerror}"
            + (
                " (another program uses the port; pick another with --port)"
                if error.errno == errno.EADDRINUSE
                else ""
            ),
        ) from None
    sock.set_inheritable(True)
    return sock


def _address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown address"
