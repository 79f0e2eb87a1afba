"""Render a report's sections as a self-contained HTML page, Markdown, and CSV tables."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import Any, Final

from langneurons.reports._blocks import (
    Block,
    Code,
    Items,
    Para,
    Pre,
    Ref,
    Section,
    Table,
    cell,
    csv_cell,
    is_number,
)

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;color:#1b1b1b;background:#fff;line-height:1.45}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 1.5rem}
header{padding-top:1.5rem;border-bottom:1px solid #ddd}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.3rem;margin-top:2.2rem;
border-bottom:2px solid #0072B2;padding-bottom:.2rem}h3{font-size:1.08rem;margin-top:1.6rem}
nav ul{font-size:.88rem;padding-left:0;list-style:none;display:flex;flex-wrap:wrap;gap:.2rem 1.2rem}
a{color:#0072B2}
ul.items{padding-left:1.2rem;margin:.4rem 0}ul.items li{margin:.2rem 0}
.table-wrap{overflow-x:auto;margin:.6rem 0 1rem}
table{border-collapse:collapse;font-size:.82rem;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.2rem 0}
th,td{border:1px solid #d6d6d6;padding:.18rem .5rem;vertical-align:top;text-align:left;
max-width:38rem;overflow-wrap:anywhere}
th{background:#f3f3f3}td.num{text-align:right}
.file{color:#666;font-size:.75rem;margin:.1rem 0 0}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.78rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444}
.note{color:#8a3b00}
.warning{color:#8a3b00;background:#fff4e5;border-left:4px solid #D55E00;padding:.3rem .6rem}
footer{color:#666;font-size:.8rem;padding:2rem 1.5rem}
"""


def html_page(sections: list[Section], title: str, subtitle: str) -> str:
    """The report as one self-contained HTML page (CSS inline, figures as data: PNG)."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(subtitle)}</p>",
        "<nav><ul>",
    ]
    for sec in sections:
        if sec.level <= 2:
            out.append(f'<li><a href="#{esc(sec.anchor)}">{esc(sec.title)}</a></li>')
    out += ["</ul></nav>", "</header>", "<main>"]
    for sec in sections:
        out.append(f'<section id="{esc(sec.anchor)}">')
        out.append(f"<h{sec.level}>{esc(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            text = _html_block(block)
            if text:
                out.append(text)
        out.append("</section>")
    out += [
        "</main>",
        f"<footer>{esc(subtitle)}. Continue in report.ipynb or report.qmd (they open the store "
        "and the results, show the key tables and rebuild the figures); tables are in tables/, "
        "figures in figures/.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Para):
        cls = f' class="{esc(block.cls)}"' if block.cls else ""
        return f"<p{cls}>{esc(block.text)}</p>"
    if isinstance(block, Items):
        items = "".join(f"<li>{esc(line)}</li>" for line in block.lines)
        return f'<ul class="items">{items}</ul>'
    if isinstance(block, Pre):
        return f"<pre>{esc(block.text)}</pre>"
    if isinstance(block, Code):
        return ""
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
        body = []
        for row in block.rows:
            cells = "".join(
                f'<td class="num">{esc(cell(v))}</td>'
                if is_number(v)
                else f"<td>{esc(cell(v))}</td>"
                for v in row
            )
            body.append(f"<tr>{cells}</tr>")
        return (
            f'<div class="table-wrap" id="tab-{esc(block.slug)}"><table>'
            f"<caption>{esc(block.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
            f'<p class="file">tables/{esc(block.slug)}.csv</p></div>'
        )
    if isinstance(block, Ref):
        fig = block.fig
        return (
            f'<p class="file">Figure: <a href="#fig-{esc(fig.slug)}">{esc(fig.title)}</a> '
            "(in the summary)</p>"
        )
    if block.png is None:
        reason = block.error or "not drawn"
        return f'<p class="note">Figure “{esc(block.title)}” could not be drawn: {esc(reason)}</p>'
    data = base64.b64encode(block.png).decode("ascii")
    caption = f" {esc(block.caption)}" if block.caption else ""
    return (
        f'<figure id="fig-{esc(block.slug)}"><img src="data:image/png;base64,{data}" '
        f'alt="{esc(block.title)}"><figcaption><strong>{esc(block.title)}.</strong>{caption} '
        f'<span class="file">(figures/{esc(block.slug)}.svg, .png)</span></figcaption></figure>'
    )


def _md_text(text: str) -> str:
    """Text for Markdown, with markup characters shown as they are."""
    return html.escape(text, quote=False)


def _md_cell(value: Any) -> str:
    text = _md_text(cell(value)).replace("\\", "\\\\")
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(sections: list[Section], title: str, subtitle: str) -> str:
    """The report as Markdown, figures linked from ``figures/``."""
    out = [f"# {title}", "", subtitle, ""]
    for sec in sections:
        out += ["#" * sec.level + " " + sec.title, ""]
        for block in sec.blocks:
            out += _md_block(block)
    return "\n".join(out) + "\n"


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Para):
        prefix = "> **Warning:** " if block.cls == "warning" else ""
        return [prefix + _md_text(block.text), ""]
    if isinstance(block, Items):
        return [f"- {_md_text(line)}" for line in block.lines] + [""]
    if isinstance(block, Pre):
        return ["```json", block.text, "```", ""]
    if isinstance(block, Code):
        return []
    if isinstance(block, Table):
        out = [f"**{_md_text(block.title)}** (`tables/{block.slug}.csv`)", ""]
        out.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
        out.append("|" + "|".join("---:" if is_number(v) else "---" for v in _align(block)) + "|")
        out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
        return [*out, ""]
    if isinstance(block, Ref):
        return [f"Figure: *{_md_text(block.fig.title)}* (in the summary)", ""]
    if block.png is None:
        return [f"> Figure “{block.title}” could not be drawn: {block.error}", ""]
    caption = f" {_md_text(block.caption)}" if block.caption else ""
    return [
        f"![{_md_text(block.title)}](figures/{block.slug}.png)",
        "",
        f"*{_md_text(block.title)}.*{caption} ([SVG](figures/{block.slug}.svg))",
        "",
    ]


def _align(table: Table) -> list[Any]:
    """A sample value per column (the first row's) to choose the alignment."""
    first = table.rows[0] if table.rows else []
    return [first[i] if i < len(first) else "" for i in range(len(table.columns))]


def write_csv(table: Table, folder: Path) -> None:
    """``folder/SLUG.csv``: header and rows, full-precision numbers, LF line ends."""
    with open(folder / f"{table.slug}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([str(c) for c in table.columns])
        writer.writerows([[csv_cell(v) for v in row] for row in table.rows])


__all__ = ["html_page", "markdown", "write_csv"]
