"""ovseg demo / python -m main_demo: segment a folder of photos with any vocabulary (spec §5, seed flags)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

from ..config import InferencePrecision, Refinement
from ..errors import OvsegError
from .common import resolve_device

HELP = "Segment every image of a folder with any vocabulary and write pictures for each --vis mode."
EXAMPLE = ("ovseg demo --resume ovsegmentor.pth --image_folder photos/ --output_folder out/ "
           "--vis input_pred_label mask --vocab cat dog \"potted plant\" \"person|man|woman\"")
MODES_HELP = "input, pred, input_pred, input_pred_label, mask, all_groups, first_group, final_group"
DEFAULT_CONFIG = "test_voc12"  # --cfg when it is not given and the vocabulary is not a preset
# seed --opts keys that only matter for training from scratch: the weights come from --resume
IGNORED_OPTS = ("model.img_encoder.imgnet_pretrained",)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", metavar="YML", help="config supplying evaluate.seg (default: test_voc12, or the preset "
                   "vocabulary's benchmark config); the model itself comes from the checkpoint")
    p.add_argument("--resume", "--checkpoint", dest="resume", metavar="CKPT",
                   help="checkpoint (official .pth or ovseg .safetensors)")
    p.add_argument("--image_folder", "--image-folder", dest="image_folder", metavar="DIR",
                   help="folder of input images (only read)")
    p.add_argument("--output_folder", "--output-folder", dest="output_folder", metavar="DIR", default="demo_output",
                   help="output root: OUT/<mode>/<input name> (default: %(default)s)")
    p.add_argument("--vis", nargs="+", action="extend", metavar="MODE",
                   help=f"one or more of: {MODES_HELP} (default: input_pred_label)")
    p.add_argument("--vocab", nargs="+", default=None, metavar="CLASS",
                   help="a preset (voc, context, coco, coco_stuff, ade) or class names; quote multi-word "
                   "names, join synonyms with '|' (\"person|man|woman\") (default: voc)")
    p.add_argument("--bg-thresh", "--bg_thresh", dest="bg_thresh", metavar="T|none",
                   help="background threshold in [0, 1], or 'none' for no background (default: the config's)")
    p.add_argument("--templates", choices=("simple", "subset", "full"),
                   help="prompt templates: 1, 7 or 80 (default: the config's, simple)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--refine", choices=get_args(Refinement),
                   help="refine the class maps along colour edges: pamr (TCL's PAMR) or pamr-local (ovseg's "
                   "variant, the quickstart's); default none")
    p.add_argument("--scoring", choices=("groups", "patches"),
                   help="patches: score every patch as a one-patch segment of its group (models with depths "
                   "[d, 0], e.g. the quickstart's; default groups, the paper's)")
    p.add_argument("--flip", action="store_true",
                   help="also segment every window mirrored left-right and average (flip test-time augmentation)")
    p.add_argument("--precision", choices=get_args(InferencePrecision),
                   help="image-encoder precision (default auto: the fastest path whose labels equal fp32's on "
                   "BENCHMARKS.md's photos; fp32: the original's arithmetic; bf16-matmul, bf16: faster, inexact)")
    p.add_argument("--recursive", action="store_true", help="also segment the images of sub-folders")
    p.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides (may be given more than once)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from ..class_presets import resolve_class_names
    from ..demo import DemoOptions, check_output_folder, find_images, normalize_modes, run_demo
    from ..inference import Segmenter
    from ..inference.class_names import parse_class_names

    if not args.resume:
        raise OvsegError("--resume CHECKPOINT is required (an official .pth or an ovseg .safetensors)")
    if not args.image_folder:
        raise OvsegError("--image_folder FOLDER is required")
    vocab = args.vocab or ["voc"]
    options = DemoOptions(modes=normalize_modes(args.vis), class_names=resolve_class_names(vocab),
                          templates=args.templates)
    parse_class_names(options.class_names)
    check_output_folder(args.image_folder, args.output_folder)
    find_images(args.image_folder, args.recursive, exclude=args.output_folder)  # an empty folder fails now
    seg_cfg, model_opts = _seg_config(args.cfg, vocab, args.opts)
    if args.precision:
        seg_cfg.precision = args.precision
    if args.refine:
        seg_cfg.refine = args.refine
    if args.scoring:
        seg_cfg.scoring = args.scoring
    if args.flip:
        seg_cfg.flip = True
    options.bg_thresh = _bg_thresh(args.bg_thresh, seg_cfg.bg_thresh)
    device = resolve_device(args.device)
    segmenter = Segmenter.from_checkpoint(args.resume, device=device, seg_cfg=seg_cfg, opts=model_opts)
    summary = run_demo(segmenter, args.image_folder, args.output_folder, options, args.recursive, _progress)
    failed = len(summary.failed)
    print(f"{summary.done} image{'' if summary.done == 1 else 's'} done, {failed} failed, "
          f"{summary.seconds_per_image:.2f} s per image "
          f"-> {Path(args.output_folder)}/ ({', '.join(options.modes)})")
    if summary.renamed:
        shown = [f"{path.relative_to(args.image_folder)} -> {stem}.<ext>" for path, stem in summary.renamed.items()]
        print(f"{len(shown)} output{'' if len(shown) == 1 else 's'} renamed to avoid collisions (inputs differing "
              f"only by extension keep it): {', '.join(shown[:5])}{' …' if len(shown) > 5 else ''}")
    return 1 if failed else 0


def _progress(results: Iterator, total: int) -> Iterator:
    """tqdm over the results; each failure named in one line as it happens."""
    from tqdm import tqdm

    for result in tqdm(results, total=total, unit="img", dynamic_ncols=True):
        if result.error:
            tqdm.write(f"skipped {result.error}", file=sys.stderr)
        yield result


def _seg_config(cfg: str | None, vocab: list[str], opts: list[str]):
    """(evaluate.seg section of --cfg with --opts, the model.* overrides for the checkpoint's config)."""
    from ..config import load_config
    from ..factory import CONFIG_DIR, preset_path

    if cfg is None:
        cfg = _preset_config(vocab)
    elif not Path(cfg).is_file() and (CONFIG_DIR / Path(cfg).name).is_file():
        cfg = str(CONFIG_DIR / Path(cfg).name)  # the seed's configs/x.yml, run from another folder
    ignored = [o for o in opts if o.startswith(IGNORED_OPTS)]
    if ignored:
        log.info("ignoring %s: the weights come from --resume", ", ".join(ignored))
    opts = [o for o in opts if o not in ignored]
    full = load_config(preset_path(cfg), opts)
    return full.evaluate.seg, [o for o in opts if o.startswith("model.")]


def _preset_config(vocab: list[str]) -> str:
    """The evaluation config of a preset vocabulary (its background threshold), else ``DEFAULT_CONFIG``; the
    evaluation-set registry is the one place that pairs a class list with its config."""
    from ..class_presets import PRESETS
    from ..evaluation.registry import get_eval_set

    if len(vocab) != 1 or vocab[0] not in PRESETS:
        return DEFAULT_CONFIG
    return get_eval_set(vocab[0]).config


def _bg_thresh(value: str | None, default: float | None) -> float | None:
    if value is None:
        return default
    if value.lower() in ("none", "off", "no", "null"):
        return None
    try:
        thresh = float(value)
    except ValueError:
        thresh = -1.0
    if not 0.0 <= thresh <= 1.0:
        raise OvsegError(f"--bg-thresh: expected a number in [0, 1] or 'none', got '{value}'")
    return thresh


def main(argv: list[str] | None = None) -> int:
    """``python -m main_demo``: the same command as ``ovseg demo``, with the dispatcher's error handling
    (a user mistake is one line on stderr and exit status 2)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="main_demo", description=HELP, epilog=f"example:\n  {EXAMPLE}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except OvsegError as e:
        print(f"main_demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("main_demo: interrupted", file=sys.stderr)
        return 130
