"""A small document model for the report: headings, paragraphs, tables, figures, rendered to
Markdown and to a self-contained HTML page (figures embedded as base64 PNG).

Inline markup in text: ``**bold**``, ``` `code` ```, the verdict words ``[agrees]``,
``[differs]``, ``[inconclusive]`` and ``[not run]`` (coloured in HTML).
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uqbench.results import unique_tmp

#: Style sheet of the HTML report.
CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { color: #123; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 .2em; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .55em; text-align: right; }
th:first-child, td:first-child, td.l { text-align: left; } th { background: #eef2f6; }
caption { caption-side: bottom; text-align: left; font-size: .85em; color: #444; padding: .3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; }
pre, code { background: #f4f4f4; padding: .1em .3em; border-radius: 3px; }
pre { padding: .6em; overflow-x: auto; }
.warning { background: #fff1e6; border-left: 5px solid #d9480f; padding: .6em 1em;
           font-weight: bold; }
.agrees { color: #1b7a2d; font-weight: bold; } .differs { color: #b3261e; font-weight: bold; }
.notrun { color: #777; font-weight: bold; } .inconclusive { color: #8a6d00; font-weight: bold; }
"""


@dataclass
class Doc:
    """The report as a list of blocks; :meth:`markdown` and :meth:`html` render it."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        """A heading of ``level`` (1-3)."""
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        """A paragraph (inline markup allowed)."""
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        """A paragraph flagged as a warning."""
        self.blocks.append(("warn", text))

    def code(self, text: str) -> None:
        """A verbatim block."""
        self.blocks.append(("code", text))

    def items(self, items: list[str]) -> None:
        """A bulleted list."""
        self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[str]], caption: str = "") -> None:
        """A table; columns whose cells are all numbers are right-aligned."""
        self.blocks.append(("table", (headers, rows, caption)))

    def figure(self, path: Path, rel: str, caption: str) -> None:
        """A PNG at ``path``, linked as ``rel`` in Markdown and embedded in HTML."""
        self.blocks.append(("fig", (path, rel, caption)))

    def markdown(self) -> str:
        """The document as Markdown."""
        out: list[str] = []
        for kind, b in self.blocks:
            if kind == "h":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "p":
                out.append(b)
            elif kind == "warn":
                out.append("> **WARNING:** " + b)
            elif kind == "code":
                out.append("```\n" + b + "\n```")
            elif kind == "ul":
                out.append("\n".join("- " + i for i in b))
            elif kind == "table":
                headers, rows, caption = b
                lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
                align = ["--:" if _numeric_column(rows, i) else "---" for i in range(len(headers))]
                lines.append("|" + "|".join(align) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                if caption:
                    lines.append("\n*" + caption + "*")
                out.append("\n".join(lines))
            elif kind == "fig":
                _, rel, caption = b
                out.append(f"![{caption}]({rel})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        """The document as one self-contained HTML page titled ``title``."""
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        ]
        for kind, b in self.blocks:
            if kind == "h":
                out.append(f"<h{b[0]}>{_inline(b[1])}</h{b[0]}>")
            elif kind == "p":
                out.append(f"<p>{_inline(b)}</p>")
            elif kind == "warn":
                out.append(f'<p class="warning">WARNING: {_inline(b)}</p>')
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(b)}</code></pre>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
            elif kind == "table":
                headers, rows, caption = b
                t = ["<table>"]
                if caption:
                    t.append(f"<caption>{_inline(caption)}</caption>")
                t.append("<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr>")
                left = [not _numeric_column(rows, i) for i in range(len(headers))]
                for row in rows:
                    cells = (
                        f'<td class="l">{_inline(c)}</td>' if left[i] else f"<td>{_inline(c)}</td>"
                        for i, c in enumerate(row)
                    )
                    t.append("<tr>" + "".join(cells) + "</tr>")
                t.append("</table>")
                out.append("".join(t))
            elif kind == "fig":
                path, _, caption = b
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(caption)}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_NUMBER = re.compile(
    r"^(\*\*)?(—|[-+]?\d[\d.,]*( ± [\d.]+| \[[-+\d., ]+\])?( ?[a-z%]+)?)(\*\*)?( †)?$"
)


def _numeric_column(rows: list[list[str]], i: int) -> bool:
    """True when every cell of column ``i`` is a number (right-aligned)."""
    cells = [str(r[i]) for r in rows if i < len(r)]
    return bool(cells) and all(_NUMBER.match(c) for c in cells)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Escape for HTML, then render **bold**, `code` and the verdict words."""
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    s = re.sub(r"\[(agrees|differs|inconclusive)\]", r'<span class="\1">\1</span>', s)
    return s.replace("[not run]", '<span class="notrun">not run</span>')


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a full disk leaves the previous file, never half a one."""
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
