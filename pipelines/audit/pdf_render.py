"""A :class:`~pipelines.audit.document.Document` as a PDF, in pure Python (matplotlib's PdfPages).

Text flows down A4 pages (DejaVu fonts, which cover Kazakh and Russian), tables in monospace with highlighted
cells, and figures are placed inline as raster images.
"""

from __future__ import annotations

import io
import os
import tempfile
import textwrap
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipelines.audit.document import (
    Bullets,
    Document,
    FigureBlock,
    KeyValues,
    Paragraph,
    Preformatted,
    Table,
)

PAGE_W, PAGE_H = 8.27, 11.69  # A4 in inches
MARGIN = 0.6
CONTENT_W = PAGE_W - 2 * MARGIN
BODY_PT, HEAD_PT, MONO_PT, TITLE_PT = 8.5, 11.5, 6.6, 15.0
BODY_CHARS = 112  # DejaVu Sans at BODY_PT across CONTENT_W, with room to spare
MONO_CHAR_IN = 0.6 * MONO_PT / 72  # DejaVu Sans Mono advance width
MONO_CHARS = int(CONTENT_W / MONO_CHAR_IN) - 1
COL_GAP = 2
MIN_COL = 8
_COLORS = {"high": "#fde2c4", "low": "#d9e8fb", "alert": "#f8c9c9", "ok": "#d6f0d6", "warn": "#fff1c9"}


def _line_h(points: float) -> float:
    return points * 1.4 / 72


class _Pager:
    """Places text, tables and images top-down on A4 figures, starting a new page when one is full."""

    def __init__(self, pdf: PdfPages) -> None:
        self._pdf = pdf
        self._fig: Figure | None = None
        self._y = MARGIN
        self.pages = 0

    def _page(self) -> Figure:
        if self._fig is None:
            self._fig = Figure(figsize=(PAGE_W, PAGE_H))
            FigureCanvasAgg(self._fig)
            self._y = MARGIN
        return self._fig

    def flush(self) -> None:
        """Write the current page (if any) to the PDF."""
        if self._fig is not None:
            self.pages += 1
            self._fig.text(
                1 - MARGIN / PAGE_W, MARGIN / 2 / PAGE_H, f"page {self.pages}", ha="right", fontsize=7, color="#777"
            )
            self._pdf.savefig(self._fig)  # type: ignore[no-untyped-call]  # matplotlib leaves PdfPages.savefig untyped
            self._fig = None

    def need(self, height: float) -> Figure:
        """The page to draw on, with at least ``height`` inches left (a new page otherwise)."""
        if self._fig is not None and self._y + height > PAGE_H - MARGIN:
            self.flush()
        return self._page()

    def gap(self, height: float) -> None:
        """Leave vertical space."""
        self._y += height

    def text(
        self,
        line: str,
        *,
        size: float = BODY_PT,
        weight: str = "normal",
        color: str = "#1b1b1b",
        background: str | None = None,
    ) -> None:
        """One line of body text, with an optional background band across the content width."""
        self.cells([(0.0, line, weight, background, 0)], size=size, mono=False, color=color)

    def cells(
        self,
        parts: list[tuple[float, str, str, str | None, int]],
        *,
        size: float = MONO_PT,
        mono: bool = True,
        color: str = "#1b1b1b",
    ) -> None:
        """One line made of ``(x inches, text, weight, background, width in characters)`` parts."""
        h = _line_h(size)
        fig = self.need(h)
        top = 1 - self._y / PAGE_H
        if mono and len(parts) > 1:
            # One text object per line (not per cell): drawing text dominates the PDF's cost.
            line = ""
            for x, text, _weight, _background, _width in parts:
                line = line.ljust(round(x / MONO_CHAR_IN)) + text
            bold = all(weight == "bold" for _x, _t, weight, _b, _w in parts)
            backgrounds = [(x, "", "normal", b, w) for x, _t, _weight, b, w in parts if b]
            parts = [*backgrounds, (0.0, line.rstrip(), "bold" if bold else "normal", None, 0)]
        for x, text, weight, background, width_chars in parts:
            if background:
                width = width_chars * MONO_CHAR_IN if mono else CONTENT_W - x
                fig.patches.append(
                    Rectangle(
                        ((MARGIN + x - 0.02) / PAGE_W, top - h / PAGE_H),
                        (width + 0.04) / PAGE_W,
                        h / PAGE_H,
                        transform=fig.transFigure,
                        facecolor=background,
                        edgecolor="none",
                        zorder=0,
                    )
                )
            if text:
                fig.text(
                    (MARGIN + x) / PAGE_W,
                    top - 0.15 * h / PAGE_H,
                    text,
                    fontsize=size,
                    fontweight=weight,
                    family="DejaVu Sans Mono" if mono else "DejaVu Sans",
                    color=color,
                    va="top",
                    parse_math=False,
                )
        self._y += h

    def image(self, png: bytes, width_in: float, height_in: float) -> None:
        """A raster image scaled to fit the content width and the page height."""
        scale = min(1.0, CONTENT_W / width_in, (PAGE_H - 2 * MARGIN) / height_in)
        w, h = width_in * scale, height_in * scale
        fig = self.need(h)
        ax = fig.add_axes(
            (MARGIN / PAGE_W, 1 - (self._y + h) / PAGE_H, w / PAGE_W, h / PAGE_H), frame_on=False, xticks=[], yticks=[]
        )
        ax.imshow(mpimg.imread(io.BytesIO(png), format="png"), interpolation="antialiased")
        self._y += h


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for raw in text.splitlines() or [""]:
        lines += textwrap.wrap(raw, width, break_long_words=True, replace_whitespace=False) or [""]
    return lines


def _column_widths(table: Table) -> list[int]:
    n = len(table.columns)
    natural = [max([len(table.columns[c]), *(len(r[c]) for r in table.rows if c < len(r))]) for c in range(n)]
    budget = MONO_CHARS - COL_GAP * (n - 1)
    widths = [max(1, w) for w in natural]
    while sum(widths) > budget and max(widths) > MIN_COL:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    return widths


def _table(pager: _Pager, table: Table) -> None:
    if table.caption:
        pager.text(table.caption, weight="bold")
    widths = _column_widths(table)
    offsets = [sum(widths[:c]) + COL_GAP * c for c in range(len(widths))]

    def row_lines(cells: list[str]) -> list[list[str]]:
        wrapped = [_wrap(cells[c] if c < len(cells) else "", widths[c]) for c in range(len(widths))]
        depth = max(len(w) for w in wrapped)
        return [[w[i] if i < len(w) else "" for w in wrapped] for i in range(depth)]

    def draw(cells: list[str], row: int | None, bold: bool = False) -> None:
        for line in row_lines(cells):
            parts = []
            for c, part in enumerate(line):
                mark = table.marks.get((row, c)) if row is not None else None
                weight = "bold" if bold or mark else "normal"
                parts.append((offsets[c] * MONO_CHAR_IN, part, weight, _COLORS.get(mark or ""), widths[c]))
            pager.cells(parts)

    draw(table.columns, None, bold=True)
    pager.cells([(0.0, "-" * (offsets[-1] + widths[-1]), "normal", None, 0)], color="#888")
    for r, row in enumerate(table.rows):
        draw(row, r)
    pager.gap(0.08)


def _paragraph(pager: _Pager, p: Paragraph) -> None:
    background = _COLORS.get(p.tone) if p.tone != "normal" else None
    for line in _wrap(p.text, BODY_CHARS):
        pager.text(line, weight="bold" if p.tone == "alert" else "normal", background=background)
    pager.gap(0.06)


def render_pdf(doc: Document, path: Path) -> int:
    """Write the document to ``path`` as a PDF (atomically); returns the number of pages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with PdfPages(tmp, metadata={"Title": doc.title, "Creator": "shipa audit report"}) as pdf:
            pager = _Pager(pdf)
            for line in _wrap(doc.title, 70):
                pager.text(line, size=TITLE_PT, weight="bold")
            for line in _wrap(doc.subtitle, BODY_CHARS):
                pager.text(line, color="#555")
            pager.gap(0.1)
            _paragraph(pager, doc.banner)
            for section in doc.sections:
                pager.need(1.0)
                pager.gap(0.12)
                for line in _wrap(section.title.joined(), 80):
                    pager.text(line, size=HEAD_PT, weight="bold", color="#223")
                pager.gap(0.04)
                for block in section.blocks:
                    if isinstance(block, Paragraph):
                        _paragraph(pager, block)
                    elif isinstance(block, KeyValues):
                        _table(pager, Table(["field", "value"], [[k, v] for k, v in block.rows]))
                    elif isinstance(block, Table):
                        _table(pager, block)
                    elif isinstance(block, Bullets):
                        for item in block.items:
                            for i, line in enumerate(_wrap(item, BODY_CHARS - 4)):
                                pager.text(("• " if i == 0 else "  ") + line)
                        pager.gap(0.06)
                    elif isinstance(block, Preformatted):
                        for line in _wrap(block.text, MONO_CHARS):
                            pager.cells([(0.0, line, "normal", None, 0)])
                        pager.gap(0.06)
                    elif isinstance(block, FigureBlock):
                        w, h = block.figure.get_size_inches()
                        pager.image(block.png, float(w), float(h))
                        pager.text(block.alt, size=7, color="#555")
            pager.flush()
            pages = pager.pages
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return pages
