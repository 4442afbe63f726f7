"""Tables on the terminal: aligned, fitted to its width (rich). Used by `miga report`
(flows/cli.py) and `miga demo`'s results (flows/miga.py)."""
from __future__ import annotations


def print_table(frame, *, keys: int = 1, bold=None, links=None, groups=None, sections=None,
                title: str | None = None, console=None) -> None:
    """Print a frame of display strings as an aligned table that fits the terminal (rich).

    Columns that would not fit go to a further table below, which repeats the first `keys`
    columns; `groups` (lists of column names, e.g. one per stock set) are kept together where
    they fit, else split evenly. bold: a frame of the same shape, True where a cell is shown in
    bold. links: a column name -> a sequence of URLs (that column's cells link there in
    terminals that can). sections: a value per row (e.g. the model type), shown as a dim row
    above the rows that share it. A header's newlines are line breaks ("csi300\\nIC").
    """
    from rich import box
    from rich.console import Console
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    cols = [str(c) for c in frame.columns]
    cells = frame.astype(str).to_numpy()

    def width(j: int) -> int:  # the column's text width, its padding and the gap to the next
        texts = [cols[j], *cells[:, j]] + ([str(v) for v in sections] if j == 0 and sections is not None else [])
        return max(len(line) for v in texts for line in v.split("\n")) + 3

    key_cols = list(range(min(keys, len(cols))))
    start = sum(width(j) for j in key_cols) - 3       # no gap after the last column
    room = max(console.width - start, 1)
    units = []
    for unit in ([[cols.index(str(c)) for c in g] for g in groups] if groups
                 else [[j] for j in range(len(key_cols), len(cols))]):
        def split(k: int) -> list[list[int]]:
            return [unit[i * len(unit) // k:(i + 1) * len(unit) // k] for i in range(k)]

        parts = 1                                      # a group too wide: in even parts
        while parts < len(unit) and any(sum(map(width, u)) > room for u in split(parts)):
            parts += 1
        units += split(parts)
    chunks, used = [[]], 0
    for unit in units:
        if chunks[-1] and used + sum(map(width, unit)) > room:
            chunks.append([])
            used = 0
        chunks[-1] += unit
        used += sum(map(width, unit))
    for n, chunk in enumerate(chunks):
        if n:
            console.print()
        if title:
            console.print(Text(title if n == 0 else f"{title} (continued)", style="bold"))
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for j in key_cols + chunk:
            t.add_column(Text(cols[j]), overflow="fold", justify="left" if j in key_cols else "right")
        for i in range(len(cells)):
            if sections is not None and (i == 0 or sections[i] != sections[i - 1]):
                t.add_row(Text(str(sections[i]), style="dim italic"))
            row = []
            for j in key_cols + chunk:
                url = links.get(cols[j])[i] if links and cols[j] in links else ""
                style = Style(bold=bool(bold is not None and bold.iat[i, j]), link=url or None)
                row.append(Text(cells[i, j], style=style))
            t.add_row(*row)
        console.print(t)
