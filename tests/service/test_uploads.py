"""Reading request bodies (covidcxr.service.uploads) without a server: the pace a body must
keep, and refusals that leave the rest of a body unread closing the connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from covidcxr.service.uploads import BodyPace, UploadError, read_upload

PACE = BodyPace(idle_s=0.3, min_bytes_per_s=1024)


async def chunks(sizes: list[int], gap_s: float, then_stall: bool = False):
    for size in sizes:
        await asyncio.sleep(gap_s)
        yield bytes(size)
    if then_stall:
        await asyncio.sleep(3600)


def read(body, content_type: str = "image/png", pace: BodyPace | None = PACE) -> bytes:
    return asyncio.run(read_upload(body, content_type, None, 2**20, pace=pace))


def test_a_body_that_keeps_coming_is_read() -> None:
    assert read(chunks([4096] * 5, 0.05)) == bytes(5 * 4096)


def test_a_stalled_body_is_408_after_the_idle_time() -> None:
    started = time.monotonic()
    with pytest.raises(UploadError) as refused:
        read(chunks([100], 0.0, then_stall=True))
    assert 0.25 < time.monotonic() - started < 2.0
    assert refused.value.status == 408 and refused.value.close
    assert "too slowly" in refused.value.detail and "send the file again" in refused.value.detail


def test_a_trickled_body_is_408_once_its_grace_has_passed() -> None:
    # A byte every 50 ms never pauses longer than idle_s, but averages 20 B/s, not 1 KiB/s.
    started = time.monotonic()
    with pytest.raises(UploadError) as refused:
        read(chunks([1] * 200, 0.05))
    assert time.monotonic() - started < 2.0
    assert refused.value.status == 408 and "1 KiB/s" in refused.value.detail


def test_without_a_pace_a_slow_body_is_waited_for() -> None:
    assert read(chunks([1] * 10, 0.05), pace=None) == bytes(10)


@pytest.mark.parametrize(
    ("content_type", "status", "words", "close"),
    [
        ("multipart/form-data", 400, "without a boundary", True),
        (f"multipart/form-data; boundary={'b' * 300}", 400, "at most 256", True),
        ("multipart/form-data; boundary=xyz", 400, "malformed", True),
    ],
)
def test_multipart_refusals(content_type, status, words, close) -> None:
    with pytest.raises(UploadError) as refused:
        read(chunks([64], 0.0), content_type)
    assert refused.value.status == status and words in refused.value.detail
    assert refused.value.close is close


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    async def never():
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(UploadError) as refused:
        asyncio.run(read_upload(never(), "image/png", str(2**21), 2**20))
    assert refused.value.status == 413 and refused.value.close
