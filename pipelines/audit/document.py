"""A report as plain blocks (paragraphs, key-value lists, tables, figures), rendered to HTML and to PDF alike.

Building the content once and rendering it twice keeps the two formats saying the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from matplotlib.figure import Figure

from pipelines.audit.figures import png_bytes

FIGURE_DPI = 120

Tone = Literal["normal", "ok", "warn", "alert"]
Mark = Literal["high", "low", "alert", "ok"]


@dataclass(frozen=True)
class Title:
    """A section title in English, Kazakh and Russian."""

    en: str
    kk: str
    ru: str

    def joined(self) -> str:
        """``English · Қазақша · Русский``."""
        return f"{self.en} · {self.kk} · {self.ru}"


@dataclass(frozen=True)
class Paragraph:
    """One paragraph; ``tone`` colours it (``alert`` for an altered audit log, ``warn`` for a mismatch)."""

    text: str
    tone: Tone = "normal"


@dataclass(frozen=True)
class KeyValues:
    """Labelled values, one per line."""

    rows: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``marks`` highlights cells by ``(row, column)`` (``high``, ``low``, ``alert``...)."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    marks: dict[tuple[int, int], Mark] = field(default_factory=dict)
    css_id: str = ""


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass(frozen=True)
class Preformatted:
    """Text shown as is (monospace)."""

    text: str


@dataclass(frozen=True)
class FigureBlock:
    """A matplotlib figure with its alternative text."""

    figure: Figure
    alt: str

    @cached_property
    def png(self) -> bytes:
        """The figure as PNG at :data:`FIGURE_DPI` (drawn once, shared by the HTML and the PDF)."""
        return png_bytes(self.figure, dpi=FIGURE_DPI)


Block = Paragraph | KeyValues | Table | Bullets | Preformatted | FigureBlock


@dataclass(frozen=True)
class Section:
    """A titled part of the report; ``key`` is its HTML anchor."""

    key: str
    title: Title
    blocks: list[Block]


@dataclass(frozen=True)
class Document:
    """The whole report: a title, a banner (the audit log's integrity) and the sections."""

    title: str
    subtitle: str
    banner: Paragraph
    sections: list[Section]
