"""Slow clients against the real server (uvicorn with ``server_config``, on loopback): bodies
and headers trickled a byte at a time hold no ``max_pending`` slot, are dropped within their
deadlines, and a client that leaves mid-upload costs one quiet log line, never a traceback."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from covidcxr.service.app import ServiceSettings, create_app
from covidcxr.service.server import server_config
from helpers import real_images, save_untrained

HOST = "127.0.0.1"
SETTINGS = ServiceSettings(
    max_pending=4,
    timeout_s=15.0,
    header_timeout_s=1.5,
    body_timeout_s=1.0,
    min_upload_kib_s=1.0,
)
#: What the server may take beyond a deadline to close a connection on a busy machine.
SLACK_S = 2.5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    model = save_untrained(tmp_path_factory.mktemp("slow") / "model")
    listener = socket.socket()
    listener.bind((HOST, 0))
    port = listener.getsockname()[1]
    app = create_app(model, settings=SETTINGS, host=HOST)
    # log_config=None: uvicorn leaves logging alone, so its records reach caplog.
    server = uvicorn.Server(
        server_config(app, SETTINGS, HOST, port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.05)
    yield f"http://{HOST}:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


class Trickler:
    """A raw connection to the server that sends ``opening``, then one more byte per
    :meth:`tick`; ``closed`` is when the server closed it, ``received`` what it answered."""

    def __init__(self, port: int, opening: bytes) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.opened = time.monotonic()
        self.closed: float | None = None
        self.received = b""
        self.sock.sendall(opening)
        self.sock.setblocking(False)

    def tick(self) -> None:
        if self.closed is not None:
            return
        try:
            while select.select([self.sock], [], [], 0)[0]:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError
                self.received += data
            self.sock.send(b"0")
        except (ConnectionResetError, BrokenPipeError):
            self.closed = time.monotonic()
            self.sock.close()


def slow_body(port: int) -> Trickler:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: image/png\r\n"
        "Content-Length: 100000\r\n\r\n\x89PNG"
    )
    return Trickler(port, head.encode())


def slow_headers(port: int) -> Trickler:
    return Trickler(port, f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Slow: ".encode())


def trickle(clients: list[Trickler], stop: threading.Event, tick_s: float = 0.2) -> None:
    while not stop.is_set() and any(client.closed is None for client in clients):
        for client in clients:
            client.tick()
        time.sleep(tick_s)


def problems(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info]


def test_trickling_clients_hold_no_slot_and_are_dropped_in_time(
    server_url: str, real_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    xray = real_images(real_dataset)[0].read_bytes()
    caplog.set_level(logging.INFO)
    bodies = [slow_body(port) for _ in range(SETTINGS.max_pending + 2)]
    headers = [slow_headers(port) for _ in range(3)]
    clients = bodies + headers
    stop = threading.Event()
    thread = threading.Thread(target=trickle, args=(clients, stop), daemon=True)
    thread.start()
    try:
        time.sleep(0.4)  # every trickler is connected and sending
        with httpx.Client(base_url=server_url, timeout=10) as http:
            assert http.get("/health").status_code == 200
            response = http.post("/predict", files={"file": ("x.png", xray, "image/png")})
            assert response.status_code == 200, response.text
            assert response.headers["x-frame-options"] == "DENY"
            still_trickling = [client for client in bodies if client.closed is None]
            assert still_trickling, "the slow bodies were dropped before the probe could run"
        thread.join(timeout=SETTINGS.header_timeout_s + 2 * SLACK_S)
    finally:
        stop.set()
        thread.join(timeout=5)
        for client in clients:
            client.sock.close()
    for client in bodies:
        assert client.closed is not None, "a trickled body was never dropped"
        assert client.closed - client.opened < SETTINGS.body_timeout_s + SLACK_S
        assert client.received.startswith(b"HTTP/1.1 408 "), client.received[:200]
        assert b"connection: close" in client.received.lower()
        assert b"too slowly" in client.received
    for client in headers:
        assert client.closed is not None, "a connection with trickled headers was never closed"
        assert client.closed - client.opened < SETTINGS.header_timeout_s + SLACK_S
    closing = [r for r in caplog.records if "no complete request headers" in r.getMessage()]
    assert len(closing) == len(headers)
    assert problems(caplog.records) == []


def test_a_client_leaving_mid_upload_logs_one_quiet_line(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    caplog.set_level(logging.INFO)
    client = slow_body(port)
    time.sleep(0.2)  # the request has reached the app, which waits for the body
    client.sock.close()
    deadline = time.monotonic() + 5
    left = []
    while not left and time.monotonic() < deadline:
        left = [r for r in caplog.records if "before its upload was complete" in r.getMessage()]
        time.sleep(0.05)
    assert len(left) == 1 and left[0].levelno == logging.INFO and left[0].exc_info is None
    assert problems(caplog.records) == []


def test_a_kept_alive_connection_gets_a_new_header_deadline(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    client = Trickler(port, f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    deadline = time.monotonic() + 5
    while b'"status":"ok"' not in client.received and time.monotonic() < deadline:
        client.tick()  # the first byte of the next request's headers goes out with the read
        time.sleep(0.2)
    answered = time.monotonic()
    assert client.received.startswith(b"HTTP/1.1 200 ")
    while client.closed is None and time.monotonic() < answered + 2 * SLACK_S + 2:
        client.tick()
        time.sleep(0.2)
    assert client.closed is not None, "a kept-alive connection trickling headers stayed open"
    assert client.closed - answered < SETTINGS.header_timeout_s + SLACK_S
