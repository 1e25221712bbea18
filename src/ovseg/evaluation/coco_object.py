"""COCO-Object labels from COCO-Stuff-164k label maps, exactly as GroupViT's converter (spec Appendix D).

Every thing id (0–89, 80 of them) becomes its COCO-Object index + 1, every stuff id (91–181) and 255
become 0 (background); each pixel is mapped from the original map through one lookup table. Ids that are
neither (they do not occur in COCO-Stuff) are written as 255 (ignored) and reported. Output files are
``<name>_instanceTrainIds.png``, the names the COCO-Object reader expects. ``stuff=True`` writes mmseg's
COCO-Stuff-171 labels instead (all 171 ids → 0..170, 255 kept; ``<name>_labelTrainIds.png``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import OvsegError
from ..fileio import atomic_write
from .datasets import read_label

log = logging.getLogger(__name__)

# COCO-Stuff-164k ids of the 80 thing classes, in COCO-Object order (label = position + 1).
THING_IDS = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27, 30, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 66, 69, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 83, 84, 85, 86, 87, 88, 89,
)
STUFF_IDS = tuple(range(91, 182))  # the 91 stuff classes
UNKNOWN = 255


def coco_object_lut() -> np.ndarray:
    """(256,) uint8: COCO-Stuff id -> COCO-Object label (things 1..80, stuff and 255 -> 0, others 255)."""
    lut = np.full(256, UNKNOWN, dtype=np.uint8)
    lut[list(STUFF_IDS) + [255]] = 0
    lut[list(THING_IDS)] = np.arange(1, len(THING_IDS) + 1)
    return lut


def coco_stuff_lut() -> np.ndarray:
    """(256,) uint8: COCO-Stuff id -> mmseg COCO-Stuff-171 label 0..170; 255 and unknown ids -> 255."""
    lut = np.full(256, UNKNOWN, dtype=np.uint8)
    lut[list(THING_IDS + STUFF_IDS)] = np.arange(len(THING_IDS) + len(STUFF_IDS))
    return lut


def known_ids() -> np.ndarray:
    """(256,) bool: ids that may occur in a COCO-Stuff-164k map."""
    known = np.zeros(256, dtype=bool)
    known[list(THING_IDS + STUFF_IDS) + [255]] = True
    return known


@dataclass
class ConvertReport:
    """What a conversion did; ``unknown``: {id: pixels} of ids neither thing nor stuff (written as 255)."""

    written: int = 0
    output_dir: str = ""
    unknown: dict[int, int] = field(default_factory=dict)
    unknown_files: list[str] = field(default_factory=list)


def output_name(src: Path, stuff: bool = False) -> str:
    """GroupViT's naming: ``000000000139.png`` -> ``000000000139_instanceTrainIds.png``."""
    return src.name.split(".")[0] + ("_labelTrainIds.png" if stuff else "_instanceTrainIds.png")


def convert_map(src: Path, dst_dir: Path, stuff: bool = False) -> dict[int, int]:
    """Convert one label map; returns {unknown id: pixels}."""
    raw = read_label(src)
    if raw.dtype != np.uint8:
        raise OvsegError(f"{src}: expected an 8-bit COCO-Stuff label map, got {raw.dtype}")
    lut = coco_stuff_lut() if stuff else coco_object_lut()
    counts = np.bincount(raw.ravel(), minlength=256)
    unknown = {int(i): int(counts[i]) for i in np.flatnonzero((counts > 0) & ~known_ids())}
    out = Image.fromarray(lut[raw], mode="L")
    atomic_write(dst_dir / output_name(src, stuff), lambda tmp: out.save(tmp, format="PNG"))
    return unknown


def label_maps(src_dir: str | Path) -> list[Path]:
    """The COCO-Stuff maps in ``src_dir`` (``*.png`` minus converted ``*TrainIds.png``), sorted."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise OvsegError(f"{src_dir}: no such folder (give the COCO-Stuff-164k label folder, e.g. "
                         "coco_stuff164k/annotations/val2017)")
    files = sorted(p for p in src_dir.glob("*.png") if "TrainIds" not in p.name)
    if not files:
        hint = next((f"; did you mean {src_dir / s}?" for s in ("annotations/val2017", "val2017")
                     if (src_dir / s).is_dir()), "")
        raise OvsegError(f"{src_dir}: no COCO-Stuff label maps (*.png){hint}")
    return files


def convert_coco_object(src_dir: str | Path, dst_dir: str | Path, workers: int | None = None, stuff: bool = False,
                        progress: bool = True) -> ConvertReport:
    """Convert every COCO-Stuff map in ``src_dir`` into ``dst_dir`` in parallel (``workers`` processes)."""
    files, dst_dir = label_maps(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    fn = partial(convert_map, dst_dir=dst_dir, stuff=stuff)
    report = ConvertReport(output_dir=str(dst_dir))
    for path, unknown in _parallel(fn, files, workers, progress, "coco-stuff" if stuff else "coco-object"):
        report.written += 1
        if unknown:
            report.unknown_files.append(str(path))
            for k, v in unknown.items():
                report.unknown[k] = report.unknown.get(k, 0) + v
    if report.unknown:
        log.warning("%d files hold ids that are neither COCO-Stuff things nor stuff (%s pixels by id), written "
                    "as 255 (ignored); e.g. %s", len(report.unknown_files), report.unknown, report.unknown_files[0])
    return report


def _parallel(fn: Callable, items: list, workers: int | None, progress: bool, desc: str) -> Iterable[tuple]:
    """Yield (item, fn(item)) with a progress bar; ``workers`` ≤ 1 runs in this process."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    with bar:
        if workers <= 1:
            for item in items:
                yield item, fn(item)
                bar.update()
            return
        with get_context("spawn").Pool(workers) as pool:
            for item, result in zip(items, pool.imap(fn, items, chunksize=16), strict=True):
                yield item, result
                bar.update()


# --------------------------------------------------------------------- from the instances JSON (optional)
def convert_from_instances(instances_json: str | Path, dst_dir: str | Path, progress: bool = True,
                           limit: int | None = None) -> ConvertReport:
    """COCO-Object labels drawn from ``instances_val2017.json`` with pycocotools (optional dependency).

    Instances are painted largest first (smaller objects stay visible), crowds included, label = the
    category's COCO-Object index + 1, elsewhere 0. Close to, but not bit-identical with, the maps made from
    COCO-Stuff (whose thing pixels come from the same annotations).
    """
    try:
        from pycocotools.coco import COCO
    except ImportError as e:
        raise OvsegError("--instances needs pycocotools (pip install pycocotools); or convert COCO-Stuff-164k "
                         "label maps instead") from e
    coco = _quiet(COCO, str(instances_json))
    lut, dst_dir = coco_object_lut(), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(coco.getImgIds())[:limit]
    for img_id in tqdm(ids, desc="coco-object", unit="img", disable=not progress, dynamic_ncols=True):
        info = coco.loadImgs(img_id)[0]
        label = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img_id)), key=lambda a: -a["area"])
        for ann in anns:
            label[coco.annToMask(ann) > 0] = lut[ann["category_id"] - 1]
        out = Image.fromarray(label, mode="L")
        atomic_write(dst_dir / output_name(Path(info["file_name"])), lambda tmp, o=out: o.save(tmp, format="PNG"))
    return ConvertReport(written=len(ids), output_dir=str(dst_dir))


def _quiet(fn: Callable, *args):
    """pycocotools prints while loading; keep it off stdout."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)
