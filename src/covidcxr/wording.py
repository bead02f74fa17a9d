"""Words for counts in messages: ``1 file``, ``2 files``. Light: no imports."""

from __future__ import annotations


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """``count`` with ``word`` (``plural_form``, default ``word + "s"``, unless it is 1), the
    count with thousands separators: ``plural(1, "file")`` is ``"1 file"``,
    ``plural(1204, "entry", "entries")`` is ``"1,204 entries"``."""
    return f"{count:,} {word if count == 1 else plural_form or word + 's'}"
