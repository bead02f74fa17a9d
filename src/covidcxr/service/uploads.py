"""Reading one uploaded X-ray from an HTTP request body, in memory only.

Starlette's form parser spools file parts larger than 1 MiB to a temporary file; an X-ray is a
patient's data, so covidcxr parses ``multipart/form-data`` itself with python-multipart's
streaming parser into memory, counting bytes as they arrive and stopping at the size limit.
A raw body (``Content-Type: image/png``, ``application/dicom``, ``application/octet-stream``...)
is taken as the file itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


class UploadError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``detail`` says why and
    what to do."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


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
) -> bytes:
    """The uploaded file's bytes from a request body streamed as ``chunks``.

    Raises :class:`UploadError` 413 when the declared or actual body exceeds ``max_bytes`` (plus
    room for multipart headers), 400 for a malformed multipart body or one without a file part.
    """
    limit = max_bytes + 64 * 1024 if content_type.startswith("multipart/") else max_bytes
    too_large = UploadError(
        413,
        f"the upload is larger than this service accepts ({max_bytes / 2**20:g} MiB); "
        "send a smaller image or start the service with a larger --max-upload-mb",
    )
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise too_large
    if content_type.startswith("multipart/form-data"):
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
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary: send a normal form upload")
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
                )
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise UploadError(400, f"the multipart body is malformed ({error})") from None
    for part in parts:
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition.get(b"name", b"").decode("utf-8", "replace") == field:
            return part.data
    raise UploadError(400, f"no file in the form: send the X-ray in a form field named {field!r}")
