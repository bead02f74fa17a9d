"""Reading one uploaded X-ray from an HTTP request body, in memory only.

Starlette's form parser spools file parts larger than 1 MiB to a temporary file; an X-ray is a
patient's data, so covidcxr parses ``multipart/form-data`` itself with python-multipart's
streaming parser into memory, counting bytes as they arrive and stopping at the size limit.
A raw body (``Content-Type: image/png``, ``application/dicom``, ``application/octet-stream``...)
is taken as the file itself. A body that arrives too slowly (:class:`BodyPace`) is refused
with 408.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: Longest multipart boundary accepted: python-multipart's own limit. RFC 2046 allows 70
#: characters; browsers and HTTP libraries write 30 to 70.
MAX_BOUNDARY_LENGTH = 256


class UploadError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``detail`` says why and
    what to do. ``close``: the body was not read to its end, so the connection cannot carry
    another request and is closed after the answer."""

    def __init__(self, status: int, detail: str, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


@dataclass(frozen=True)
class BodyPace:
    """How slowly a request body may arrive: no pause between two chunks longer than
    ``idle_s`` seconds and, once ``idle_s`` has passed since the body was first awaited, an
    average of at least ``min_bytes_per_s``. A client trickling a byte a second is dropped a
    little after ``idle_s``; a slow but working link is not."""

    idle_s: float
    min_bytes_per_s: float

    def deadline(self, started: float, last_chunk: float, received: int) -> float:
        """The ``time.monotonic()`` by which the next chunk must arrive."""
        return min(
            last_chunk + self.idle_s, started + self.idle_s + received / self.min_bytes_per_s
        )


@dataclass
class _Part:
    headers: dict[bytes, bytes]
    data: bytearray


async def read_upload(
    chunks: AsyncIterator[bytes],
    content_type: str,
    content_length: str | None,
    max_bytes: int,
    field: str = "file",
    pace: BodyPace | None = None,
) -> bytes:
    """The uploaded file's bytes from a request body streamed as ``chunks``.

    Raises :class:`UploadError` 413 when the declared or actual body exceeds ``max_bytes`` (plus
    room for multipart headers), 400 for a malformed multipart body or one without a file part,
    408 when the body arrives slower than ``pace`` allows. Those raised before the body's end
    have ``close`` set: the rest of it is never read.
    """
    media_type = content_type.lower()  # the boundary in it is case-sensitive: parsed apart
    limit = max_bytes + 64 * 1024 if media_type.startswith("multipart/") else max_bytes
    too_large = UploadError(
        413,
        f"the upload is larger than this service accepts ({max_bytes / 2**20:g} MiB); "
        "send a smaller image or start the service with a larger --max-upload-mb",
        close=True,
    )
    if pace is not None:
        chunks = _paced(chunks, pace)
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise too_large
    if media_type.startswith("multipart/form-data"):
        body = await _read_multipart(chunks, content_type, limit, field)
    else:
        body = bytearray()
        async for chunk in chunks:
            body.extend(chunk)
            if len(body) > limit:
                raise too_large
    if len(body) > max_bytes:
        raise too_large
    return bytes(body)


async def _read_multipart(
    chunks: AsyncIterator[bytes], content_type: str, limit: int, field: str
) -> bytearray:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(
            400, "multipart/form-data without a boundary: send a normal form upload", close=True
        )
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise UploadError(
            400,
            f"the multipart boundary is {len(boundary)} characters long; at most "
            f"{MAX_BOUNDARY_LENGTH} are accepted (RFC 2046 allows 70): let the browser or HTTP "
            "library write the form, or send the file as the raw body",
            close=True,
        )
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        parts.append(_Part({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise UploadError(
                    413,
                    f"the upload is larger than this service accepts "
                    f"({(limit - 64 * 1024) / 2**20:g} MiB); send a smaller image or start the "
                    "service with a larger --max-upload-mb",
                    close=True,
                )
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise UploadError(400, f"the multipart body is malformed ({error})", close=True) from None
    for part in parts:
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition.get(b"name", b"").decode("utf-8", "replace") == field:
            return part.data
    raise UploadError(400, f"no file in the form: send the X-ray in a form field named {field!r}")


async def _paced(chunks: AsyncIterator[bytes], pace: BodyPace) -> AsyncIterator[bytes]:
    """``chunks``, or UploadError 408 as soon as the next one is later than ``pace`` allows."""
    iterator = aiter(chunks)
    started = last_chunk = time.monotonic()
    received = 0
    while True:
        wait = pace.deadline(started, last_chunk, received) - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, wait)):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            elapsed = time.monotonic() - started
            raise UploadError(
                408,
                f"the upload arrived too slowly ({received / 1024:,.1f} KiB in {elapsed:.1f} s; "
                f"this service needs at least {pace.min_bytes_per_s / 1024:g} KiB/s, without a "
                f"pause over {pace.idle_s:g} s): check the network connection and send the file "
                "again",
                close=True,
            ) from None
        received += len(chunk)
        last_chunk = time.monotonic()
        yield chunk
