"""ovseg export CHECKPOINT --output DIR: the encoders as ONNX graphs (and torch.export programs)."""

from __future__ import annotations

import argparse

HELP = (
    "Export a checkpoint's image encoder (per window) and text encoder to ONNX and/or torch.export, with the "
    "harness settings a runtime needs (export.json); run them with ovseg.export.OnnxSegmenter."
)
EXAMPLE = "ovseg export ovsegmentor.pth --output exported/ --crop-size 448 --format both"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="official .pth or ovseg .safetensors")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the graphs and export.json")
    p.add_argument(
        "--crop-size",
        type=int,
        metavar="N",
        help="sliding-window size of the harness (default: the config's evaluate.seg.crop_size, 448); "
        "the graphs take any window size",
    )
    p.add_argument(
        "--format",
        choices=("onnx", "torch-export", "both"),
        default="onnx",
        help="onnx: image_encoder.onnx + text_encoder.onnx; torch-export: the same as .pt2 programs "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--cfg",
        metavar="YML",
        help="config supplying evaluate.seg (default: the built-in defaults, PASCAL VOC's harness)",
    )
    p.add_argument(
        "--opts",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, e.g. evaluate.seg.scoring=patches evaluate.seg.bg_thresh=0.5 "
        "(model.* ones apply to the checkpoint's config)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..checkpoints import load_model
    from ..config import apply_opts, load_config, schema
    from ..errors import OvsegError
    from ..export.writer import export_model, require_onnx
    from ..factory import preset_path

    if args.format != "torch-export":
        require_onnx()  # before the checkpoint is read: a missing extra fails at once
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise OvsegError(f"--output {args.output}: exists and is not a folder")
    model_opts = [o for o in args.opts if o.startswith("model.")]
    base = load_config(preset_path(args.cfg)) if args.cfg else schema()
    seg_cfg = apply_opts(base, [o for o in args.opts if o not in model_opts]).evaluate.seg
    model, _ = load_model(args.checkpoint, device="cpu", opts=model_opts)
    result = export_model(model, seg_cfg, args.output, args.crop_size, args.format)
    print(f"wrote {result.folder}/: {', '.join(result.files)}")
    if result.parity:
        figures = ", ".join(f"{name} {diff:.1e}" for name, diff in result.parity.items())
        print(f"onnxruntime vs PyTorch, max abs difference: {figures}")
    return 0
