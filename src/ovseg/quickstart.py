"""``ovseg quickstart``: learn segmentation from captions on one CPU, end to end, with no downloads.

Stage 1 then stage 2 on the embedded captioned scenes (presets ``quickstart/stage1`` and ``stage2``), model
(the best checkpoint of either stage) and background threshold selected on the validation split, then
zero-shot mIoU on the test split with the category names and with held-out synonyms never seen in training,
overlays of test images, a plot of the training curves and ``results.json``. Stage 1's image encoder
starts from scratch or from a self-supervised start (``--init ssl | PATH``: stem, position table and
pre-grouping blocks from ``ovseg pretrain-ssl``); ``results.json`` names it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from .checkpoints import load_model
from .config import load_config, to_container
from .data.builder import scene_split
from .data.scenes.dataset import class_names, held_out_names
from .engine.trainer import TrainResult, train
from .engine.validate import evaluate_scenes, scene_seg_config
from .errors import CheckpointError, ConfigError
from .factory import preset_path
from .fileio import atomic_write
from .inference import Segmenter
from .inference.refine import RefineSettings
from .label_stats import pixel_shares
from .viz import add_legend, class_palette, overlay_labels
from .viz.plot import StageCurves, stage_curves_from_records, write_training_plot
from .weights import QUICKSTART_SSL, record_path, sha256_of, verify_record

log = logging.getLogger(__name__)


@dataclass
class QuickstartOptions:
    output: Path
    opts: tuple[str, ...] = ()  # overrides for both stages
    stage2: bool = True
    shuffle_captions: bool = False  # control: captions paired with the wrong images
    overlays: int = 6
    init: str = "scratch"  # stage 1's image encoder: scratch | ssl (the packaged start) | a pretrain-ssl file
    design: str = "quickstart"  # quickstart: the preset's encoder | faithful: the paper's (GroupViT grouping)


DESIGNS = {"quickstart": ("quickstart/stage1", "quickstart/stage2"),
           "faithful": ("quickstart/faithful_stage1", "quickstart/faithful_stage2")}


INIT_NAMES = ("scratch", "ssl")


@dataclass(frozen=True)
class InitChoice:
    """Where stage 1's image encoder starts: ``name`` scratch, ssl or file; ``path`` the ovseg-ssl file."""

    name: str
    path: Path | None = None

    def opts(self) -> list[str]:
        if self.path is None:
            return []
        return ["model.img_encoder.init=ovseg-ssl", f"model.img_encoder.init_checkpoint={self.path}"]

    def describe(self) -> dict:
        """results.json's ``init``: name, path and the file's sha256 (None from scratch)."""
        if self.path is None:
            return {"name": self.name, "path": None, "sha256": None}
        return {"name": self.name, "path": str(self.path), "sha256": sha256_of(self.path)}


def resolve_init(value: str) -> InitChoice:
    """``--init``: scratch, ssl (the packaged file, checked against its record) or a path to an ovseg-ssl
    file; anything else, or a file that is not there, is one line."""
    if value == "scratch":
        return InitChoice("scratch")
    if value == "ssl":
        if not QUICKSTART_SSL.is_file():
            raise ConfigError(f"--init ssl: this installation has no packaged start ({QUICKSTART_SSL.name} is "
                              "not in ovseg/weights); make one with `ovseg pretrain-ssl` and pass --init PATH")
        verify_record(QUICKSTART_SSL, record_path(QUICKSTART_SSL))
        return InitChoice("ssl", QUICKSTART_SSL)
    path = Path(value)
    if path.is_file():
        return InitChoice("file", path)
    if path.suffix or len(path.parts) > 1:
        raise CheckpointError(f"--init {value}: file not found")
    raise ConfigError(f"--init: unknown '{value}' (expected {', '.join(INIT_NAMES)} or the path of an "
                      "encoder.safetensors from `ovseg pretrain-ssl`)")


def run_quickstart(options: QuickstartOptions) -> dict:
    """Train both stages, evaluate on the test split, write the report; returns results.json's content."""
    start, out = time.perf_counter(), Path(options.output)
    init = resolve_init(options.init)
    if options.design not in DESIGNS:
        raise ConfigError(f"--design: expected one of {', '.join(DESIGNS)}, got '{options.design}'")
    presets = DESIGNS[options.design]
    common = [*options.opts] + (["data.shuffle_captions=true"] if options.shuffle_captions else [])
    cfg1 = load_config(preset_path(presets[0]), [f"output={out / 'stage1'}", *init.opts(), *common])
    result = stage1 = train(cfg1, out / "stage1")
    cfg = cfg1
    if options.stage2:
        start_from = stage1.best or stage1.final
        cfg = load_config(
            preset_path(presets[1]),
            [f"output={out / 'stage2'}", f"checkpoint.stage1_checkpoint={start_from}", *common],
        )
        stage2 = train(cfg, out / "stage2")
        result = select_on_validation(stage1, stage2)
    train_seconds = time.perf_counter() - start
    model, _ = load_model(result.best or result.final)
    report = evaluate_test(model, cfg, result)
    report.update(
        seconds=time.perf_counter() - start,
        train_seconds=train_seconds,
        stage1_val_miou=stage1.best_val_miou,
        stages=2 if options.stage2 else 1,
        selected_stage=1 if result is stage1 else 2,
        shuffle_captions=options.shuffle_captions,
        init=init.describe(),
        design=options.design,
        checkpoint=str(result.best or result.final),
        settings={"stage1": to_container(cfg1), "stage2": to_container(cfg) if options.stage2 else None},
    )
    stages = {"stage1": cfg1, "stage2": cfg} if options.stage2 else {"stage1": cfg1}
    write_plot(out, {name: c.data.batch_size * c.train.accumulation_steps for name, c in stages.items()}, report)
    write_overlays(out, model, cfg, result, options.overlays)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    return report


def select_on_validation(stage1: TrainResult, stage2: TrainResult) -> TrainResult:
    """The stage whose best checkpoint scored higher on validation (stage 2 on a tie or without scores):
    stage 2 usually helps, but not always within the quickstart's 100 steps, and the test split must not
    decide."""
    if (
        stage1.best_val_miou is not None
        and stage2.best_val_miou is not None
        and stage1.best_val_miou > stage2.best_val_miou
    ):
        return stage1
    return stage2


def evaluate_test(model, cfg, result: TrainResult) -> dict:
    """Test-split mIoU with category names and with held-out synonyms (threshold chosen on validation)."""
    test = scene_split(cfg, "test")
    seg = cfg.evaluate.seg
    thresh = result.best_bg_thresh if result.best_bg_thresh is not None else seg.bg_thresh
    names = evaluate_scenes(model, test, class_names(), [thresh], cfg.data.image_size, seg)
    synonyms = evaluate_scenes(model, test, held_out_names(), [thresh], cfg.data.image_size, seg)
    first, second = next(iter(names.values())), next(iter(synonyms.values()))
    report = {
        "miou": first["miou"],
        "miou_synonyms": second["miou"],
        "per_class_iou": first["per_class_iou"],
        "per_class_iou_synonyms": second["per_class_iou"],
        "val_miou": result.best_val_miou,
        "bg_thresh": thresh,
        "background": seg.background,
        "refine": seg.refine,
        "refine_settings": asdict(RefineSettings.from_config(seg)) if seg.refine != "none" else None,
        "scoring": seg.scoring,
        "flip": bool(seg.flip),
        "rotate": bool(seg.rotate),
        "test_images": len(test),
        "held_out_synonyms": dict(zip(class_names(), held_out_names(), strict=True)),
    }
    if seg.refine != "none":  # the same scoring without refinement, for comparison
        plain = OmegaConf.merge(seg, {"refine": "none"})
        unrefined = evaluate_scenes(model, test, class_names(), [thresh], cfg.data.image_size, plain)
        report["miou_unrefined"] = unrefined[thresh]["miou"]
    if seg.refine != "none" or seg.scoring != "groups" or seg.flip or seg.rotate:
        report["miou_paper_harness"], report["paper_harness_bg_thresh"] = paper_harness_miou(model, cfg, test)
    return report


def paper_harness_miou(model, cfg, test) -> tuple[float, float]:
    """Test mIoU with the paper's harness (groups scored, no refinement, no flip or turns), its background threshold
    chosen on the validation split among ``evaluate.val_bg_thresholds`` as for the preset's own harness."""
    paper = OmegaConf.merge(cfg.evaluate.seg, {"refine": "none", "scoring": "groups", "flip": False, "rotate": False})
    test_miou, thresh, _ = validated_test_miou(model, cfg, paper, list(cfg.evaluate.val_bg_thresholds), test)
    return test_miou, thresh


def run_config(checkpoint: str | Path):
    """The settings of the training run that wrote ``checkpoint``: the ``config.yaml`` the trainer keeps in its
    output folder (beside the checkpoint, or one level up for ``checkpoints/step_*``), else the stage-2 preset.
    A checkpoint's own stored config only describes its architecture (docs/security.md), so scoring settings
    (``evaluate.seg``) and data settings come from here."""
    for folder in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
        if (folder / "config.yaml").is_file():
            return load_config(folder / "config.yaml")
    log.info("%s: no config.yaml beside it; using the quickstart/stage2 preset's settings", checkpoint)
    return load_config(preset_path("quickstart/stage2"))


def validated_test_miou(model, cfg, seg, thresholds: list[float], test=None) -> tuple[float, float, dict]:
    """(test mIoU, background threshold chosen on the validation split, {threshold: validation mIoU}) of
    ``model`` scored with the ``evaluate.seg`` settings ``seg``."""
    size, names = cfg.data.image_size, class_names()
    val = evaluate_scenes(model, scene_split(cfg, "val"), names, thresholds, size, seg)
    thresh = max(val, key=lambda t: val[t]["miou"])
    test = scene_split(cfg, "test") if test is None else test
    test_miou = evaluate_scenes(model, test, names, [thresh], size, seg)[thresh]["miou"]
    return test_miou, thresh, {t: v["miou"] for t, v in val.items()}


def write_plot(out: Path, batches: dict[str, int], report: dict | None = None) -> Path:
    """training.png: the curves of ``stage_curves`` and, with a ``report``, its per-class test IoU with the
    category names and with their held-out synonyms."""
    return write_training_plot(out / "training.png", stage_curves(out, batches), class_iou(report) if report else None)


def stage_curves(out: Path, batches: dict[str, int]) -> list[StageCurves]:
    """Loss parts and validation mIoU of each stage's ``metrics.jsonl`` against the samples seen (``batches``:
    stage folder -> samples per step); stage 2 continues where stage 1 ended."""
    curves, start = [], 0
    for name, batch in batches.items():
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        curves.append(stage_curves_from_records(name, records, batch, start))
        start += max((r["step"] for r in records), default=0) * batch
    return curves


def class_iou(report: dict) -> dict[str, dict[str, float | None]]:
    """The report's per-class test IoU as two bar series, each class labelled "name / held-out synonym"."""
    synonyms = {"background": "background", **report["held_out_synonyms"]}
    labels = {
        name: name if synonyms[name] == name else f"{name} / {synonyms[name]}" for name in report["per_class_iou"]
    }
    return {
        f"category names (mIoU {report['miou']:.1f})": {labels[n]: v for n, v in report["per_class_iou"].items()},
        f"held-out synonyms (mIoU {report['miou_synonyms']:.1f})": {
            labels[n]: report["per_class_iou_synonyms"].get(synonyms[n]) for n in labels
        },
    }


def write_overlays(out: Path, model, cfg, result: TrainResult, count: int, zoom: int = 4) -> list[Path]:
    """overlays/test_XXX.png: input | ground truth | prediction, with a legend."""
    if count <= 0:
        return []
    seg_cfg = scene_seg_config(cfg.data.image_size, cfg.evaluate.seg)
    segmenter, test = Segmenter(model, seg_cfg), scene_split(cfg, "test")
    names = ["background", *class_names()]
    palette = class_palette(len(names))
    paths = []
    thresh = result.best_bg_thresh if result.best_bg_thresh is not None else cfg.evaluate.seg.bg_thresh
    for i in range(min(count, len(test))):
        image, truth = test.render(i)
        pred = segmenter.predict(image, class_names(), bg_thresh=thresh).labels.numpy()
        big = [np.kron(a, np.ones((zoom, zoom) + (1,) * (a.ndim - 2), dtype=a.dtype)) for a in (image, truth, pred)]
        panels = [big[0], overlay_labels(big[0], big[1], palette), overlay_labels(big[0], big[2], palette)]
        picture = Image.fromarray(np.concatenate(panels, axis=1))
        shares = pixel_shares(big[2], len(names))
        entries = [
            (names[k], tuple(int(c) for c in palette[k]), float(shares[k]))
            for k in np.argsort(-shares)
            if shares[k] > 0
        ]
        picture = add_legend(picture, entries)
        path = out / "overlays" / f"test_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, p=picture: p.save(tmp, format="PNG"))
        paths.append(path)
    return paths


def format_table(report: dict) -> str:
    """Per-class IoU with category names and with the held-out synonyms."""
    rows = [f"{'class':<12} {'IoU':>6}   {'synonym':<12} {'IoU':>6}"]
    synonyms = {"background": "background", **report["held_out_synonyms"]}
    for name, iou in report["per_class_iou"].items():
        syn = synonyms[name]
        other = report["per_class_iou_synonyms"].get(syn)
        rows.append(f"{name:<12} {_pct(iou):>6}   {syn:<12} {_pct(other):>6}")
    rows.append(f"{'mIoU':<12} {report['miou']:>6.1f}   {'':<12} {report['miou_synonyms']:>6.1f}")
    return "\n".join(rows)


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"
