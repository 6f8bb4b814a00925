"""Markdown, HTML and PDF from one list of blocks, so the three formats always say the same thing.

A report is a list of blocks, plain tuples:
    ("heading", level, text)   ("paragraph", text)   ("list", items)
    ("table", header, rows)    ("code", text)        ("image", png_name, alt_text)
"""

from __future__ import annotations

import base64
import html
import re
import textwrap
from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.image import imread

from tunelab import __version__
from tunelab.rundir import atomic_write, atomic_write_text


def to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for block in blocks:
        match block:
            case ("heading", level, text):
                parts.append(f"{'#' * level} {text}")
            case ("paragraph", text):
                parts.append(text)
            case ("list", items):
                parts.append("\n".join(f"- {item}" for item in items))
            case ("table", header, rows):
                lines = [header, ["---"] * len(header), *rows]
                parts.append("\n".join("| " + " | ".join(map(_markdown_cell, line)) + " |" for line in lines))
            case ("code", text):
                fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", text))])
                parts.append(f"{fence}yaml\n{text.rstrip()}\n{fence}")
            case ("image", name, alt):
                parts.append(f"![{alt}]({name})")
    return "\n\n".join(parts) + "\n"


def _markdown_cell(text) -> str:
    """One line, pipes escaped, and '<' as an entity so viewers cannot take user text for HTML."""
    return one_line(text).replace("|", "\\|").replace("<", "&lt;")


def one_line(text) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; }
img { max-width: 100%; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
"""


def to_html(blocks: list[tuple], folder: Path) -> str:
    escape = html.escape
    body = []
    for block in blocks:
        match block:
            case ("heading", level, text):
                body.append(f"<h{level}>{escape(text)}</h{level}>")
            case ("paragraph", text):
                body.append(f"<p>{escape(text)}</p>")
            case ("list", items):
                body.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>")
            case ("table", header, rows):
                head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
                cells = ("".join(f"<td>{escape(str(cell))}</td>" for cell in row) for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>"
                            + "".join(f"<tr>{row}</tr>" for row in cells) + "</tbody></table>")
            case ("code", text):
                body.append(f"<pre><code>{escape(text)}</code></pre>")
            case ("image", name, alt):
                data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>')
    title = escape(blocks[0][2])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


PAGE = (8.27, 11.69)  # A4 portrait, inches
MARGIN = 0.6
FONT_SIZE = 8
WIDTH = 100  # characters per line of 8 pt monospace inside the margins
HEADING_SIZES = {1: 14, 2: 11, 3: 9}


def write_pdf(blocks: list[tuple], folder: Path, path: Path) -> None:
    metadata = {"Title": blocks[0][2], "Creator": f"tunelab {__version__}"}
    with PdfPages(path, metadata=metadata) as pdf:
        layout = _PdfLayout(pdf)
        for block in blocks:
            match block:
                case ("image", name, _):
                    layout.image(folder / name)
                case ("heading", level, text):
                    size = HEADING_SIZES.get(level, FONT_SIZE)
                    layout.lines(textwrap.wrap(text, WIDTH) + [""], size, "bold",
                                 keep_with_next=6 * _line_height(FONT_SIZE))
                case _:
                    layout.lines(_plain_lines(block) + [""])
        layout.finish()


def _plain_lines(block: tuple) -> list[str]:
    match block:
        case ("paragraph", text):
            return textwrap.wrap(text, WIDTH)
        case ("list", items):
            return [line for item in items
                    for line in textwrap.wrap(item, WIDTH, initial_indent="- ", subsequent_indent="  ")]
        case ("table", header, rows):
            return _plain_table(header, rows)
        case ("code", text):
            return [line[i:i + WIDTH] for line in text.expandtabs(4).splitlines()
                    for i in range(0, max(len(line), 1), WIDTH)]
    return []


def _plain_table(header: list[str], rows: list[list]) -> list[str]:
    """Aligned columns when they fit on the page, otherwise one record per row, a line per column."""
    cells = [[one_line(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) <= WIDTH:
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
        return [lines[0], "  ".join("-" * width for width in widths), *lines[1:]]
    indent = max(len(name) for name in header) + 2
    lines = []
    for number, row in enumerate(cells[1:], start=1):
        lines.append(f"[{number}]")
        for name, cell in zip(header, row):
            lines += textwrap.wrap(cell, WIDTH, initial_indent=name.ljust(indent),
                                   subsequent_indent=" " * indent) or [name]
    return lines


def _line_height(size: float) -> float:
    return size * 1.35 / 72


class _PdfLayout:
    """Places monospace lines and images top to bottom on A4 pages, starting a new page when one is full."""

    def __init__(self, pdf: PdfPages):
        self.pdf = pdf
        self.page: Figure | None = None
        self.top = 0.0  # inches from the bottom of the page to the next free spot

    def lines(self, lines: list[str], size: float = FONT_SIZE, weight: str = "normal",
              keep_with_next: float = 0.0) -> None:
        """A block shorter than a third of a page stays on one page, with `keep_with_next` inches below it."""
        height = _line_height(size)
        whole = len(lines) * height
        self._make_room(whole + keep_with_next if whole < (PAGE[1] - 2 * MARGIN) / 3 else height)
        for line in lines:
            self._make_room(height)
            if line or self.top < PAGE[1] - MARGIN:
                self.page.text(MARGIN / PAGE[0], self.top / PAGE[1], line, family="monospace", size=size,
                               weight=weight, va="top", parse_math=False)
                self.top -= height

    def image(self, png: Path) -> None:
        pixels = imread(png)
        width = PAGE[0] - 2 * MARGIN
        height = min(width * pixels.shape[0] / pixels.shape[1], PAGE[1] - 2 * MARGIN)
        self._make_room(height)
        bottom = self.top - height
        axes = self.page.add_axes((MARGIN / PAGE[0], bottom / PAGE[1], width / PAGE[0], height / PAGE[1]))
        axes.imshow(pixels, interpolation="none")
        axes.set_axis_off()
        self.top -= height + 0.15

    def finish(self) -> None:
        if self.page is not None:
            self.pdf.savefig(self.page)
            self.page = None

    def _make_room(self, height: float) -> None:
        if self.page is None or self.top - height < MARGIN:
            self.finish()
            self.page = Figure(figsize=PAGE)
            self.top = PAGE[1] - MARGIN


def write_documents(blocks: list[tuple], figures: dict[str, Figure], folder: Path) -> Path:
    """Write the figures as PNGs, then report.md, report.html and report.pdf into `folder`; return report.md."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        atomic_write(folder / name, lambda tmp, fig=figure: fig.savefig(tmp, format="png", dpi=150))
    atomic_write_text(folder / "report.md", to_markdown(blocks))
    atomic_write_text(folder / "report.html", to_html(blocks, folder))
    atomic_write(folder / "report.pdf", lambda tmp: write_pdf(blocks, folder, tmp))
    return folder / "report.md"
