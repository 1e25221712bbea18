"""One row per compared entry, the manifest's comparison rules, and the printed table."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# label-map pixels a manifest excuses: top-1/top-2 logit margin below 1e-5, or a group near-tie upstream
FRAGILE_PIXEL_FIELDS = ("fragile_yx_margin_below_1e-5", "fragile_yx_group_near_tie")


@dataclass
class Row:
    """One compared entry: status is 'ok', 'FAIL', 'skipped' or 'missing'."""

    name: str
    shape: tuple
    diff: float | None
    tolerance: str
    status: str
    note: str = ""


def compare(entry: dict, got: torch.Tensor | None) -> Row:
    """One manifest output (``entry["ref"]`` its stored value) against ovseg's, with the entry's own rule."""
    name, shape = entry["name"], tuple(entry["shape"])
    if got is None:
        optional = ".tap." in name
        return Row(
            name,
            shape,
            None,
            "-",
            "skipped" if optional else "missing",
            "optional debug tap" if optional else "not computed by ovseg",
        )
    ref = entry["ref"]
    if tuple(got.shape) != tuple(ref.shape):
        return Row(name, shape, math.inf, "-", "FAIL", f"shape {tuple(got.shape)}")
    if entry.get("exact"):
        return _compare_exact(entry, got.to(ref.dtype), ref)
    return _compare_close(entry, got, ref)


def _compare_close(entry: dict, got: torch.Tensor, ref: torch.Tensor) -> Row:
    """max |got − ref| ≤ atol, outside the strided positions the entry lists as fragile (a group near-tie
    upstream may flip there under any other rounding)."""
    diff = (got.double() - ref.double()).abs()
    fragile = [tuple(p) for p in entry.get("fragile_strided_yx", [])]
    if fragile and diff.ndim >= 2:
        keep = torch.ones(diff.shape[-2:], dtype=torch.bool)
        for y, x in fragile:
            keep[y, x] = False
        diff = diff[..., keep]
    worst = diff.max().item() if diff.numel() else 0.0
    atol = float(entry.get("atol", 5e-4 + 1e-4 * ref.double().abs().max().item()))
    note = f"{len(fragile)} fragile position(s) not compared" if fragile else ""
    return Row(entry["name"], tuple(ref.shape), worst, f"atol {atol:g}", "ok" if worst <= atol else "FAIL", note)


def _compare_exact(entry: dict, got: torch.Tensor, ref: torch.Tensor) -> Row:
    wrong = (got != ref).nonzero().tolist() if got.ndim else ([[]] if got.item() != ref.item() else [])
    fragile = {tuple(p) for field in FRAGILE_PIXEL_FIELDS for p in entry.get(field, [])}
    excused = [p for p in wrong if tuple(p) in fragile]
    bad = len(wrong) - len(excused)
    notes = [f"{len(excused)} fragile pixel(s) differ"] if excused else []
    notes += [f"{bad} value(s) differ"] if bad else []
    diff = (got.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    return Row(entry["name"], tuple(ref.shape), diff, "exact", "ok" if bad == 0 else "FAIL", "; ".join(notes))


def format_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'name':<{width}}  {'shape':<16} {'max abs diff':>12}  {'tolerance':<12} status"]
    for r in rows:
        diff = "-" if r.diff is None else f"{r.diff:.3g}"
        shape = "x".join(map(str, r.shape)) or "scalar"
        lines.append(
            f"{r.name:<{width}}  {shape:<16} {diff:>12}  {r.tolerance:<12} {r.status}"
            + (f"  ({r.note})" if r.note else "")
        )
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "FAIL", "missing", "skipped")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "FAIL")))
    return "\n".join(lines)
