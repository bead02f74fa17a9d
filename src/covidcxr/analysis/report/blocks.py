"""What a report is made of, as data: sections of plain-language findings, tables, figures,
galleries, paragraphs and lists. :mod:`.gather` builds them from a run; :mod:`.render` turns
them into one self-contained HTML page (a Jinja2 template, every text escaped there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias


@dataclass
class Table:
    """A table: column names and rows of cells (shown as text)."""

    header: list[str]
    rows: list[list[str]]

    def __post_init__(self) -> None:
        self.header = [str(cell) for cell in self.header]
        self.rows = [[str(cell) for cell in row] for row in self.rows]


@dataclass
class Figure:
    """A PNG picture with its caption (embedded in the page, no file beside it)."""

    png: bytes
    caption: str

    @classmethod
    def from_file(cls, path: str | Path) -> Figure:
        """The PNG at ``path``, captioned with its name (``curves.png`` → "curves")."""
        path = Path(path)
        return cls(path.read_bytes(), path.stem.replace("_", " "))


@dataclass
class Gallery:
    """Figures side by side."""

    figures: list[Figure]


@dataclass
class Paragraph:
    """A paragraph of plain text."""

    text: str


@dataclass
class Bullets:
    """A list of short points."""

    items: list[str]


Block: TypeAlias = Table | Figure | Gallery | Paragraph | Bullets


@dataclass
class Section:
    """One part of the report: a plain-language finding, then its blocks."""

    key: str
    title: str
    finding: str
    body: list[Block] = field(default_factory=list)
