"""ovseg convert OFFICIAL.pth OUT.safetensors"""

from __future__ import annotations

import argparse

HELP = "Convert an official OVSegmentor .pth checkpoint into ovseg's safetensors format (no pickle)."
EXAMPLE = "ovseg convert ovsegmentor_vitb_bert.pth ovsegmentor_vitb_bert.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="official .pth (or any checkpoint ovseg can load)")
    p.add_argument("output", help="output .safetensors path")
    p.add_argument("--keep-training-parts", action="store_true",
                   help="keep the entity decoder and momentum encoder (to continue training)")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model, save_model

    model, cfg = load_model(args.checkpoint, training=args.keep_training_parts)
    save_model(model, cfg, args.output)
    n = sum(t.numel() for t in model.state_dict().values())
    print(f"wrote {args.output}: {len(model.state_dict())} tensors, {n / 1e6:.2f} M values")
    return 0
