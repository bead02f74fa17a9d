"""The service's limits, and the Host names it answers to: :class:`ServiceSettings`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Memory one decoded pixel may take while its request is analysed, in bytes. It is the measured
#: peak of one request (decoding, classification, Grad-CAM, the lung mask, the answer's PNGs),
#: rounded up: 37 B/px with ``?heatmap=true&lungs=true`` for an 8-bit, 16-bit or RGB PNG and a
#: 12-bit DICOM alike, 10 B/px for a plain PNG prediction (a float32 copy of the image and
#: full-size float32 heatmap and mask resizes dominate). ``benchmarks/bench_service_memory.py``
#: measures the whole service.
DECODED_BYTES_PER_PIXEL = 40

#: Names of this machine on its loopback interface, as they appear in a Host header.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

#: Longest request line plus headers accepted (h11's limit; longer gets 400).
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    """Limits of the service.

    Sizes and time:

    * ``max_upload_mb``: largest accepted file (413).
    * ``timeout_s``: longest a request may take, upload included (an upload still arriving then
      gets 408, an analysis still running 504); work past it is abandoned at the next stage,
      not left running.
    * ``max_pixels``: largest image decoded (width × height; 422), well above the ~15 MP of the
      largest chest radiographs and low enough that a crafted small file cannot claim gigabytes.
    * ``max_pending``: requests analysed or waiting at once, counted from the moment a request's
      body has fully arrived; more get 503 at once rather than queueing without bound.
    * ``decode_budget_mb``: the memory bound on decoded images (MiB). Before decoding, each
      request reserves width × height (read from the file's header) ×
      :data:`DECODED_BYTES_PER_PIXEL` bytes of it and gives them back once its answer is
      ready; a request that finds too little free waits for it, in arrival order, until its
      timeout (504). The default, 1,536 MiB, holds one image of ``max_pixels`` (1,373 MiB) or
      about four 4,000 × 3,000 radiographs at once.

    Slow clients (they hold a connection, never a ``max_pending`` slot):

    * ``header_timeout_s``: the request line and headers must arrive within this long of the
      connection opening (or of the previous answer on a kept-alive connection); otherwise the
      connection is closed. Headers are also capped at :data:`MAX_HEADER_BYTES`.
    * ``body_timeout_s`` and ``min_upload_kib_s``: a body must keep arriving, with no pause
      longer than ``body_timeout_s`` and, once ``body_timeout_s`` has passed, at an average of
      at least ``min_upload_kib_s`` KiB/s; otherwise 408 and the connection is closed.

    ``allowed_hosts``: the Host headers answered (others get 400), as
    :func:`allowed_hosts_for` explains; ``"*"`` for any, ``"*.example.org"`` for a domain.
    """

    max_upload_mb: float = 32.0
    timeout_s: float = 60.0
    max_pixels: int = 6000 * 6000
    max_pending: int = 32
    decode_budget_mb: float = 1536.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    min_upload_kib_s: float = 16.0
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_upload_mb",
            "timeout_s",
            "decode_budget_mb",
            "header_timeout_s",
            "body_timeout_s",
            "min_upload_kib_s",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} should be a positive number, got {value!r}")
        for name in ("max_pixels", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} should be a positive whole number, got {value!r}")
        largest = self.max_pixels * DECODED_BYTES_PER_PIXEL
        if largest > self.decode_budget_bytes:
            raise ValueError(
                f"decode_budget_mb={self.decode_budget_mb:g} cannot hold one image of "
                f"max_pixels={self.max_pixels:,}, which needs {largest / 2**20:,.0f} MiB "
                f"({DECODED_BYTES_PER_PIXEL} bytes per pixel); raise decode_budget_mb or lower "
                "max_pixels"
            )
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str):
                raise ValueError(
                    f"allowed_hosts should be a tuple of names, got the string "
                    f"{self.allowed_hosts!r}; write ({self.allowed_hosts!r},)"
                )
            for pattern in self.allowed_hosts:
                wildcard = pattern.startswith("*") and pattern != "*"
                if not pattern or "*" in pattern[1:] or (wildcard and not pattern.startswith("*.")):
                    raise ValueError(
                        f"allowed_hosts: {pattern!r} is not a host name, '*' or a domain "
                        "pattern like '*.example.org'"
                    )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def decode_budget_bytes(self) -> int:
        return int(self.decode_budget_mb * 2**20)

    def allowed_hosts_for(self, bound_host: str | None) -> list[str]:
        """The Host header names the service answers to when it listens on ``bound_host``.

        The rule: ``allowed_hosts`` when it is set. Otherwise it follows the address:

        * loopback (``127.0.0.1``, any ``127.x.x.x``, ``::1``, ``localhost``): that address plus
          ``localhost``, ``127.0.0.1`` and ``[::1]``: a page on another site cannot reach the
          service through a name that resolves to this machine (DNS rebinding);
        * every interface (``0.0.0.0``, ``::``): any name, as the service cannot know by which
          names its network reaches it; set ``allowed_hosts`` to restrict it;
        * one other address or name: that one only;
        * ``None`` (an app that :func:`~covidcxr.service.app.serve` does not start, e.g. under
          a test client or another ASGI server): any name.
        """
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        if bound_host is None:
            return ["*"]
        host = bound_host.strip("[]").lower()
        if host in ("", "0.0.0.0", "::"):
            return ["*"]
        named = f"[{host}]" if ":" in host else host
        if host == "localhost" or _is_loopback(host):
            return sorted({named, *LOOPBACK_HOSTS})
        return [named]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
