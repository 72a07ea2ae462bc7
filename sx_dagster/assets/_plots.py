"""Small plots as markdown images, so the Dagster UI shows a picture where it says more."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import dagster as dg


def _md(fig) -> dg.MetadataValue:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")


def line_plot(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(list(xs), list(ys))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _md(fig)


def lines_plot(xs: Sequence[float], series: dict[str, Sequence[float]], title: str, xlabel: str, ylabel: str) -> dg.MetadataValue:
    """One line per series (a legend names them), e.g. accuracy against round per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return _md(fig)


def bar_figure(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, ymax: float | None = None, integer: bool = False):
    """The bar chart as a matplotlib figure (tests read its axes). ``ymax``: the y axis runs
    from 0 to at least this (a chart of zeros keeps its scale); ``integer``: counts, whole ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [str(x) for x in labels]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names)), 3.2))
    ax.bar(names, list(values))
    ax.set(title=title, ylabel=ylabel)
    top = max([0.0, *(float(v) for v in values)])
    ax.set_ylim(0, max(top * 1.05, ymax or 0.0) or 1.0)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if max(map(len, names), default=0) > 6:  # long names (model labels) would overlap: one word a line
        ax.set_xticks(range(len(names)), [n.replace("_", "_\n").replace(" ", "\n") for n in names])
    return fig


def bar_plot(
    labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, ymax: float | None = None, integer: bool = False
) -> dg.MetadataValue:
    return _md(bar_figure(labels, values, title, ylabel, ymax, integer))


def _cell(text: object, limit: int = 120) -> str:
    """One markdown table cell: one line, pipes escaped, long text cut."""
    s = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


EXAMPLE_COLUMNS = (
    ("pair_id", "pair"),
    ("prefix_last_step", "last step before the pit"),
    ("pit_step", "pit step (rejected)"),
    ("chosen", "chosen continuation"),
    ("pit", "pit"),
    ("true_first_error", "true first error"),
)


def examples_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], limit: int = 5) -> dg.MetadataValue:
    """A few rows as a markdown table, so a bad example shows in the UI without SQL.
    ``columns``: (key in the row, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in list(rows)[:limit]]
    return dg.MetadataValue.md("\n".join([head, *body]) if body else "(no rows)")
