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


def bar_plot(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([str(x) for x in labels], list(values))
    ax.set(title=title, ylabel=ylabel)
    return _md(fig)
