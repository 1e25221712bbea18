"""The training report's figure, drawn with matplotlib: loss parts and validation mIoU against the samples seen
over every stage, with the stage boundaries marked, beside a per-class IoU bar chart of the tested model.

Figures are built from ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no global
state is touched and nothing needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from ..fileio import atomic_write

LOG_SCALE_RATIO = 20.0  # loss parts whose largest/smallest value differ more than this are drawn on a log scale


@dataclass
class StageCurves:
    """One training stage; x values are samples seen since the start of the first stage."""

    name: str
    start: float = 0.0  # samples seen when the stage started
    losses: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # part -> (samples, values)
    val_miou: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # (samples, mIoU %)
    val_top1: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # (samples, top-1 %)


def stage_curves_from_records(name: str, records: list[dict], batch: int, start: float = 0.0) -> StageCurves:
    """A stage's ``metrics.jsonl`` records (``step``, ``loss_*``, ``val_miou``, ``val_top1``) as curves against
    the samples seen (``batch`` samples per step, counted from ``start``)."""
    stage = StageCurves(name, start=start)
    for r in records:
        seen = start + r["step"] * batch
        for key, series in (("val_miou", stage.val_miou), ("val_top1", stage.val_top1)):
            if r.get(key) is not None:
                series[0].append(seen)
                series[1].append(r[key])
        for key in (k for k in r if k.startswith("loss_") and k != "loss_grad_norm"):
            xs, ys = stage.losses.setdefault(key[5:], ([], []))
            xs.append(seen)
            ys.append(r[key])
    return stage


ClassIoU = Mapping[str, Mapping[str, float | None]]  # series name (e.g. "category names") -> class -> IoU %


def training_figure(stages: list[StageCurves], class_iou: ClassIoU | None = None, dpi: int = 100) -> Figure:
    """Losses (top left) and validation mIoU (bottom left) against samples seen, stage starts as dashed lines;
    with ``class_iou``, a horizontal bar chart of per-class IoU on the right (one bar per series and class)."""
    figure = Figure(figsize=(13 if class_iou else 8.5, 7.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 2 if class_iou else 1, width_ratios=[3, 2] if class_iou else None)
    loss_axes = figure.add_subplot(grid[0, 0])
    val_axes = figure.add_subplot(grid[1, 0], sharex=loss_axes)
    _draw_losses(loss_axes, stages)
    _draw_validation(val_axes, stages)
    for axes in (loss_axes, val_axes):
        _mark_stages(axes, stages)
    if class_iou:
        _draw_class_iou(figure.add_subplot(grid[:, 1]), class_iou)
    return figure


def write_training_plot(path: str | Path, stages: list[StageCurves], class_iou: ClassIoU | None = None) -> Path:
    """``training_figure`` saved as a PNG (atomically: a reader never sees half a file)."""
    figure = training_figure(stages, class_iou)
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png"))
    return Path(path)


def _draw_losses(axes: Axes, stages: list[StageCurves]) -> None:
    parts = list(dict.fromkeys(name for stage in stages for name in stage.losses))
    colours = {name: f"C{k}" for k, name in enumerate(parts)}
    values = []
    for stage in stages:
        for name, (xs, ys) in stage.losses.items():
            total = name == "total"
            axes.plot(
                xs,
                ys,
                color="black" if total else colours[name],
                linewidth=2.0 if total else 1.2,
                marker="o" if len(xs) == 1 else None,
                label=name if stage is _first_with(stages, name) else None,
            )
            values += [y for y in ys if math.isfinite(y)]
    if values and min(values) > 0 and max(values) / min(values) > LOG_SCALE_RATIO:
        axes.set_yscale("log")
    axes.set_title("training losses")
    axes.set_ylabel("loss" + (" (log scale)" if axes.get_yscale() == "log" else ""))
    _finish(axes, empty="no loss records")


def _draw_validation(axes: Axes, stages: list[StageCurves]) -> None:
    for k, stage in enumerate(stages):
        xs, ys = stage.val_miou
        if not xs:
            continue
        axes.plot(xs, ys, color=f"C{k}", marker="o", linewidth=1.5, label=f"{stage.name}")
    for k, stage in enumerate(stages):  # zero-shot classification, where it was validated
        xs, ys = stage.val_top1
        if xs:
            axes.plot(xs, ys, color=f"C{k}", marker="s", linestyle=":", linewidth=1.5, label=f"{stage.name} top-1")
    axes.set_title("validation: segmentation mIoU (dotted: classification top-1)"
                   if any(s.val_top1[0] for s in stages) else "validation mIoU")
    axes.set_xlabel("training samples seen")
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M
    axes.set_ylabel("mIoU / top-1 (%)" if any(s.val_top1[0] for s in stages) else "mIoU (%)")
    _finish(axes, empty="no validation records")


def _draw_class_iou(axes: Axes, class_iou: ClassIoU) -> None:
    series = list(class_iou)
    classes = list(dict.fromkeys(c for name in series for c in class_iou[name]))
    height = 0.8 / len(series)
    for k, name in enumerate(series):
        ious = [class_iou[name].get(c) for c in classes]
        rows = [i + (k - (len(series) - 1) / 2) * height for i in range(len(classes))]
        bars = axes.barh(rows, [_number(v) for v in ious], height=height, color=f"C{k}", label=name)
        axes.bar_label(bars, [_label(v) for v in ious], padding=2, fontsize="x-small")
    axes.set_yticks(range(len(classes)), classes)
    axes.invert_yaxis()  # first class on top, as in the report's table
    axes.set_xlim(0, 112)  # room for the value labels of a bar at 100
    axes.set_xticks(range(0, 101, 20))
    axes.set_xlabel("IoU (%)")
    axes.set_title("per-class IoU, test split")
    axes.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        axes.legend(loc="best", fontsize="small")


def _mark_stages(axes: Axes, stages: list[StageCurves]) -> None:
    """A dashed line where each stage after the first starts, labelled at the top."""
    for stage in stages[1:]:
        axes.axvline(stage.start, color="grey", linestyle="--", linewidth=1)
        axes.annotate(
            f"{stage.name} starts",
            (stage.start, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize="small",
            color="grey",
        )


def _finish(axes: Axes, empty: str) -> None:
    """Grid and a legend outside the plotting area (never over a curve), or a note when nothing was drawn."""
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    else:
        axes.text(0.5, 0.5, empty, transform=axes.transAxes, ha="center", va="center", color="grey")


def _first_with(stages: list[StageCurves], part: str) -> StageCurves:
    return next(s for s in stages if part in s.losses)


def _number(value: float | None) -> float:
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def _label(value: float | None) -> str:
    """The bar's value; "n/a" for a class absent from both the ground truth and the predictions."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0f}"
