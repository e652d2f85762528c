"""A :class:`~pipelines.audit.document.Document` as one self-contained HTML file.

Images are inline ``data:`` URIs, styles are inline, there are no scripts, fonts or links out of the page, and a
Content-Security-Policy forbids the browser to fetch anything else, so opening the report makes no request.
"""

from __future__ import annotations

import base64
from html import escape

from pipelines.audit.document import (
    Block,
    Bullets,
    Document,
    FigureBlock,
    KeyValues,
    Paragraph,
    Preformatted,
    Section,
    Table,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1b1b1b; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #ccd; padding-bottom: 0.2em; margin-top: 2em; }
.subtitle { color: #555; margin-top: 0; }
nav ol { columns: 2; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eef; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: 0.3em; white-space: nowrap; }
td { overflow-wrap: anywhere; }
td.high { background: #fde2c4; font-weight: bold; }
td.low { background: #d9e8fb; font-weight: bold; }
td.alert { background: #f8c9c9; font-weight: bold; }
td.ok { background: #d6f0d6; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; font-size: 0.9em; }
dl.kv dt { font-weight: bold; }
dl.kv dd { margin: 0; word-break: break-all; }
p.ok, p.warn, p.alert { padding: 0.5em 0.8em; border-radius: 4px; }
p.ok { background: #d6f0d6; border-left: 6px solid #2e7d32; }
p.warn { background: #fff1c9; border-left: 6px solid #b28704; }
p.alert { background: #f8c9c9; border-left: 6px solid #b71c1c; font-weight: bold; }
pre { background: #f5f5f8; padding: 0.6em; overflow-x: auto; font-size: 0.8em; white-space: pre-wrap; }
figure { margin: 0.8em 0; }
img { max-width: 100%; height: auto; }
"""


def _paragraph(p: Paragraph) -> str:
    cls = f' class="{p.tone}"' if p.tone != "normal" else ""
    return f"<p{cls}>{escape(p.text)}</p>"


def _table(t: Table) -> str:
    ident = f' id="{escape(t.css_id)}"' if t.css_id else ""
    out = [f"<table{ident}>"]
    if t.caption:
        out.append(f"<caption>{escape(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in t.columns) + "</tr></thead><tbody>")
    for r, row in enumerate(t.rows):
        cells = []
        for c, cell in enumerate(row):
            mark = t.marks.get((r, c))
            cls = f' class="{mark}"' if mark else ""
            cells.append(f"<td{cls}>{escape(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(f: FigureBlock) -> str:
    data = f.png
    width, height = (round(float(v) * 100) for v in f.figure.get_size_inches())
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{escape(f.alt)}" width="{width}" height="{height}">'
        f"<figcaption>{escape(f.alt)}</figcaption></figure>"
    )


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return _paragraph(block)
    if isinstance(block, KeyValues):
        items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in block.rows)
        return f'<dl class="kv">{items}</dl>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Preformatted):
        return f"<pre>{escape(block.text)}</pre>"
    return _figure(block)


def _section(section: Section) -> str:
    body = "\n".join(_block(b) for b in section.blocks)
    title = escape(section.title.joined())
    return f'<section id="{escape(section.key)}">\n<h2>{title}</h2>\n{body}\n</section>'


def render_html(doc: Document) -> str:
    """The document as a complete HTML page (UTF-8, no external resources)."""
    toc = "".join(f'<li><a href="#{escape(s.key)}">{escape(s.title.joined())}</a></li>' for s in doc.sections)
    sections = "\n".join(_section(s) for s in doc.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(doc.title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{escape(doc.title)}</h1>
<p class="subtitle">{escape(doc.subtitle)}</p>
{_paragraph(doc.banner)}
<nav><ol>{toc}</ol></nav>
</header>
<main>
{sections}
</main>
</body>
</html>
"""
