"""A timeline as a PNG Gantt chart: one row per worker, one bar per span.

Bars are coloured by label (the labels with the most busy time get the
colours, the rest share a light grey "other"), failed spans are red and
listed in the legend. matplotlib is imported only here and only when a
plot is drawn, through its object API (Figure + the Agg canvas): pyplot
and the user's chosen backend are never touched.

Drawing a million spans one rectangle each would take matplotlib many
seconds and show nothing more than the image has pixels. So each row is
one collection, and a row of more than SPARSE_SPANS spans is drawn at the
image's resolution: spans closer than half a pixel join into one bar, a
bar never spans more than one pixel column of mixed labels (it takes the
colour of the label with the most time in it), and neighbouring bars of
one colour join again, so a row has at most about two bars per pixel. A
bar that holds a failure is red and at least one pixel wide: no failure
disappears at any scale. Rows of few spans draw each span exactly, with a
thin white outline so back-to-back tasks stay countable.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import numpy.typing as npt

from .span import Span

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MISSING_MATPLOTLIB", "require_matplotlib", "draw", "save_png"]

MISSING_MATPLOTLIB = 'Timeline.plot needs matplotlib: pip install "shmproc[plot]"'

WIDTH_INCHES = 11.0
DPI = 100
ROW_INCHES = 0.4            # height per worker row, until MAX_HEIGHT_INCHES
MAX_HEIGHT_INCHES = 14.0    # past it rows get thinner: a 256-worker chart stays a sane PNG
MAX_TICKS = 40              # y labels beyond this: every k-th worker
BAR_HEIGHT = 0.7            # of a row
SPARSE_SPANS = 200          # a row with at most this many spans draws each one, outlined

FAILED_COLOUR = "#d62728"   # red: no label colour is near it
OTHER_COLOUR = "#c7c7c7"
# tab10 without its red, orange and pink, which a failure could be mistaken for.
LABEL_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def require_matplotlib() -> None:
    """ImportError naming the extra to install, unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB, name="matplotlib") from exc


def draw(spans: Sequence[Span], *, workers: int, kind: str, window: tuple[float, float], headline: str,
         title: str | None) -> Figure:
    """The chart as a matplotlib Figure on an Agg canvas (``spans`` sorted by start)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = max(workers, 1)
    figure = Figure(figsize=(WIDTH_INCHES, min(1.8 + ROW_INCHES * rows, MAX_HEIGHT_INCHES)), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    low, high = window
    if high <= low:
        high = low + 1.0
    # Seconds per pixel column of the plotting area, which the layout makes
    # 65-80% of the figure's width (the legend takes the rest). Erring wide
    # keeps a "one pixel" failure at least one real pixel wide.
    pixel = (high - low) / (WIDTH_INCHES * DPI * 0.6)

    start, end, worker, code, legend = _arrays(spans)
    failed_code = len(LABEL_COLOURS) + 1
    palette = np.array([_rgba(c) for c in (*LABEL_COLOURS, OTHER_COLOUR, FAILED_COLOUR)])
    # Spans are sorted by start; a stable sort by worker keeps that order inside each row.
    by_worker = np.argsort(worker, kind="stable")
    bounds = np.searchsorted(worker[by_worker], np.arange(rows + 1))
    for row in range(workers):
        mine = by_worker[bounds[row]:bounds[row + 1]]
        if not len(mine):
            continue
        sparse = len(mine) <= SPARSE_SPANS
        left, width, colour = (_exact if sparse else _merged)(start[mine], end[mine], code[mine], pixel,
                                                              failed_code)
        verts = np.empty((len(left), 4, 2))
        verts[:, 0, 0] = verts[:, 1, 0] = left
        verts[:, 2, 0] = verts[:, 3, 0] = left + width
        verts[:, 0, 1] = verts[:, 3, 1] = row - BAR_HEIGHT / 2
        verts[:, 1, 1] = verts[:, 2, 1] = row + BAR_HEIGHT / 2
        # A thin white outline separates back-to-back tasks, but would eat a
        # bar of a few pixels: those, and failures, go without. Not
        # antialiased: a one-pixel failure keeps its exact red, not a blend.
        outline = (colour != failed_code) & (width >= 3 * pixel) if sparse else np.zeros(len(left), np.bool_)
        axes.add_collection(PolyCollection(list(verts), facecolors=palette[colour], edgecolors="white",
                                           linewidths=np.where(outline, 0.3, 0.0), antialiaseds=False))

    axes.set_xlim(low, high)
    axes.set_ylim(rows - 0.5, -0.5)          # worker 0 on top
    step = -(-rows // MAX_TICKS)
    axes.set_yticks(range(0, rows, step), [f"worker {w}" for w in range(0, rows, step)])
    axes.set_xlabel(f"seconds since the {kind} started")
    axes.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.set_title(headline if title is None else f"{title}\n{headline}", fontsize=10)
    if not len(spans):
        axes.text(0.5, 0.5, "no spans recorded", transform=axes.transAxes, ha="center", va="center",
                  color="#808080")
    handles = [Patch(facecolor=colour, label=text) for colour, text in legend]
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                    fontsize="small", frameon=False)
    return figure


def save_png(figure: Figure, file: BinaryIO) -> None:
    figure.savefig(file, format="png", dpi=DPI)


def _arrays(spans: Sequence[Span]) -> tuple[FloatArray, FloatArray, IntArray, IntArray,
                                             list[tuple[str, str]]]:
    """start, end, worker and colour code per span, and the legend (colour, text) entries.

    Colour codes: 0..len(LABEL_COLOURS)-1 a label's colour, then "other",
    then "failed".
    """
    n = len(spans)
    start = np.fromiter((s.start for s in spans), np.float64, n)
    end = np.fromiter((s.end for s in spans), np.float64, n)
    worker = np.fromiter((s.worker for s in spans), np.int64, n)
    failed = np.fromiter((not s.ok for s in spans), np.bool_, n)
    ids: dict[str, int] = {}
    label = np.fromiter((ids.setdefault(s.label, len(ids)) for s in spans), np.int64, n)
    names = list(ids)
    # Colours go to the labels with the most busy time among spans that did
    # not fail (a failed span is red whatever its label).
    ok = ~failed
    busy = np.bincount(label[ok], weights=(end - start)[ok], minlength=len(names))
    counts = np.bincount(label[ok], minlength=len(names))
    ranked = sorted((i for i in range(len(names)) if counts[i]), key=lambda i: (-busy[i], names[i]))
    other, failed_code = len(LABEL_COLOURS), len(LABEL_COLOURS) + 1
    code_of_label = np.full(len(names), other, np.int64)
    legend: list[tuple[str, str]] = []
    for rank, i in enumerate(ranked[:len(LABEL_COLOURS)]):
        code_of_label[i] = rank
        legend.append((LABEL_COLOURS[rank], f"{_short(names[i])} ({counts[i]:,})"))
    if len(ranked) > len(LABEL_COLOURS):
        rest = sum(int(counts[i]) for i in ranked[len(LABEL_COLOURS):])
        legend.append((OTHER_COLOUR, f"other labels ({rest:,})"))
    code = code_of_label[label]
    code[failed] = failed_code
    if failed.any():
        legend.append((FAILED_COLOUR, f"failed ({int(failed.sum()):,})"))
    return start, end, worker, code, legend


def _exact(start: FloatArray, end: FloatArray, code: IntArray, pixel: float,
           failed_code: int) -> tuple[FloatArray, FloatArray, IntArray]:
    return _failures_last(start, end - start, code, pixel, failed_code)


def _merged(start: FloatArray, end: FloatArray, code: IntArray, pixel: float,
            failed_code: int) -> tuple[FloatArray, FloatArray, IntArray]:
    # Group the spans into bars: a bar ends where a gap of half a pixel or
    # more opens, and at every pixel column, so no bar hides more than a
    # pixel's worth of mixed work. reach[i] is the furthest any span up to
    # i ends (overlaps included).
    reach = np.maximum.accumulate(end)
    column = np.floor(start / pixel)
    breaks = np.ones(len(start), np.bool_)
    breaks[1:] = (start[1:] > reach[:-1] + pixel / 2) | (column[1:] != column[:-1])
    first = np.flatnonzero(breaks)
    left = start[first]
    right = np.maximum.reduceat(end, first)
    # A bar takes the colour of the code with the most time in it (zero-length
    # spans weigh a little, so a bar of them still has a colour); one failure
    # makes it red.
    weight = np.maximum(end - start, pixel * 1e-3)
    time_per_code = np.stack([np.add.reduceat(np.where(code == c, weight, 0.0), first)
                              for c in range(failed_code)])
    colour = np.argmax(time_per_code, axis=0).astype(np.int64)
    holds_failure = np.maximum.reduceat((code == failed_code).astype(np.int8), first) > 0
    colour[holds_failure] = failed_code
    # Neighbouring bars of one colour with no gap between them: one bar.
    joined = np.ones(len(first), np.bool_)
    joined[1:] = (left[1:] > right[:-1] + pixel / 2) | (colour[1:] != colour[:-1])
    keep = np.flatnonzero(joined)
    left, right, colour = left[keep], np.maximum.reduceat(right, keep), colour[keep]
    return _failures_last(left, right - left, colour, pixel, failed_code)


def _failures_last(left: FloatArray, width: FloatArray, colour: IntArray, pixel: float,
                   failed_code: int) -> tuple[FloatArray, FloatArray, IntArray]:
    # Failed bars: at least a pixel wide, and drawn last so nothing covers them.
    failed = colour == failed_code
    width = np.where(failed, np.maximum(width, pixel), width)
    order = np.argsort(failed, kind="stable")
    return left[order], width[order], colour[order]


def _rgba(colour: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba
    return to_rgba(colour)


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"
