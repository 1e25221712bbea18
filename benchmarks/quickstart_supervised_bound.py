"""How far could the quickstart's recognizer get with full labels? A supervised upper bound.

At test time the quickstart scores every patch by its own conv-stem features (``segment_values: stem``,
``scoring: patches``), so what the stem learns to recognise in the CPU budget bounds the zero-shot result.
This script trains the preset's conv stem (same widths, extra convolutions, batch, learning-rate schedule and
training scenes) with the ground-truth masks that the quickstart never sees: every patch gets a linear
classifier over background + the ten categories and a cross-entropy against its pixels' label distribution.
It then scores the test scenes as the quickstart does (patch maps resized bilinearly, averaged over the
mirrored and turned views; with and without refinement along colour edges) and prints one JSON line.

    python benchmarks/quickstart_supervised_bound.py --steps 480            # the preset's stage-1 samples
    python benchmarks/quickstart_supervised_bound.py --steps 960 --seed 1
    python benchmarks/quickstart_supervised_bound.py --opts model.img_encoder.stem_extra_convs=4
    python benchmarks/quickstart_supervised_bound.py --opts train.amp=bf16-stem      # the stem trained in bf16
    python benchmarks/quickstart_supervised_bound.py --init ssl     # the stem starts from the shipped iBOT start
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.checkpoints.backbone_formats import read_ssl_header, read_ssl_tensors, ssl_encoder_shape
from ovseg.config import load_config
from ovseg.data.scenes.dataset import CaptionedScenes, class_names, to_model_input
from ovseg.engine.optim import build_optimizer, lr_at, scaled_lrs, set_lr
from ovseg.engine.precision import stem_dtype
from ovseg.evaluation.metrics import ConfusionMatrix
from ovseg.factory import preset_path
from ovseg.inference.refine import RefineSettings
from ovseg.inference.slide import grid_back, orient_patch_grid_back, show_in_view, window_views
from ovseg.model.vision import conv_stem
from ovseg.weights import QUICKSTART_SSL


class PatchClassifier(nn.Module):
    """The preset's conv stem + LayerNorm + a linear layer over background and the categories, per patch."""

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        enc = cfg.model.img_encoder
        self.stem = conv_stem(enc.patch_size, 3, enc.embed_dim, False, enc.stem_extra_convs)
        self.head = nn.Sequential(nn.LayerNorm(enc.embed_dim), nn.Linear(enc.embed_dim, num_classes))
        self.stem_dtype = stem_dtype(cfg.train.amp, torch.device("cpu"))  # the preset's train.amp, in training

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) -> (B, h·w, classes) logits and the patch grid."""
        low = self.stem_dtype is not None and self.training
        with torch.autocast("cpu", dtype=self.stem_dtype or torch.bfloat16, enabled=low):
            tokens, grid = self.stem(images)
        return self.head(tokens.float()), grid


def load_stem(model: PatchClassifier, cfg, init: str) -> str:
    """Start the stem from an ``ovseg pretrain-ssl`` file (``ssl``: the packaged one): its ``patch_embed``
    tensors, the same start the quickstart's ``--init`` gives stage 1's stem. Returns the file read."""
    header = read_ssl_header(QUICKSTART_SSL if init == "ssl" else init)
    if header.shape != ssl_encoder_shape(cfg.model.img_encoder):
        raise SystemExit(f"{header.source}: made for encoder {header.shape}, not this preset's")
    stem = {k.removeprefix("patch_embed."): v for k, v in read_ssl_tensors(header).items()
            if k.startswith("patch_embed.")}
    model.stem.load_state_dict(stem)  # strict: every stem tensor comes from the file
    return header.source


def train(model: PatchClassifier, cfg, steps: int, seed: int, num_classes: int) -> float:
    """``steps`` batches of the preset's training scenes, each patch against its pixels' label distribution;
    returns the seconds spent."""
    data, tr = cfg.data, cfg.train
    scenes = CaptionedScenes("train", data.scenes.train_size, data.image_size, seed=seed,
                             clutter=data.scenes.clutter, background_pool=data.scenes.background_pool)
    batch = data.batch_size
    per_epoch = len(scenes) // batch
    base_lr, warmup_lr, min_lr = scaled_lrs(tr, batch)
    opt = build_optimizer(model, tr, base_lr)  # the trainer's AdamW, weight-decay groups and schedule
    order = torch.Generator().manual_seed(seed)
    patch, start = cfg.model.img_encoder.patch_size, time.perf_counter()
    model.train()
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            scenes.set_epoch(epoch)
            perm = torch.randperm(len(scenes), generator=order).tolist()
        rendered = [scenes.render(i) for i in perm[k * batch : (k + 1) * batch]]
        images = torch.stack([to_model_input(img) for img, _ in rendered])
        labels = torch.stack([torch.from_numpy(lab.astype("int64")) for _, lab in rendered])
        target = F.avg_pool2d(F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float(), patch)  # (B, C, h, w)
        logits, _ = model(images)
        loss = -(target.flatten(2).transpose(1, 2) * logits.log_softmax(-1)).sum(-1).mean()
        set_lr(opt, lr_at(step, steps, round(per_epoch * tr.warmup_epochs), base_lr, warmup_lr, min_lr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 40 == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} {time.perf_counter() - start:.0f} s", flush=True)
    return time.perf_counter() - start


@torch.no_grad()
def class_probabilities(model: PatchClassifier, image: torch.Tensor, flip: bool, rotate: bool) -> torch.Tensor:
    """(3, H, W) -> (classes, H, W): patch probabilities averaged over the views, resized bilinearly."""
    probs = []
    for view in window_views(flip, rotate):
        logits, grid = model(show_in_view(image, view).unsqueeze(0))
        back = orient_patch_grid_back(logits.softmax(-1), grid, 1, view)
        probs.append(back[0].t().reshape(-1, *grid_back(grid, view)))
    mean = torch.stack(probs).mean(0)
    return F.interpolate(mean[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]


def evaluate(model: PatchClassifier, cfg, split: str, images: int, flip: bool, rotate: bool) -> dict:
    scenes = CaptionedScenes(split, images, cfg.data.image_size, clutter=cfg.data.scenes.clutter)
    refine, k = RefineSettings.from_config(cfg.evaluate.seg), len(class_names()) + 1  # the preset's refinement
    plain, refined = ConfusionMatrix(k), ConfusionMatrix(k)
    model.eval()
    for i in range(images):
        image, labels = scenes.render(i)
        x, gt = to_model_input(image), torch.from_numpy(labels.astype("int64"))
        probs = class_probabilities(model, x, flip, rotate)
        plain.update(probs.argmax(0), gt)
        better = refine.refine(x, probs)
        refined.update(better.argmax(0), gt)
    names = ["background", *class_names()]
    scores = refined.scores()
    return {"miou_refined": 100 * scores.miou, "miou_unrefined": 100 * plain.scores().miou,
            "per_class_iou_refined": {n: round(100 * float(v), 1) for n, v in zip(names, scores.iou, strict=True)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", default=str(preset_path("quickstart/stage1.yml")), help="the preset to mirror")
    ap.add_argument("--steps", type=int, default=480, help="training steps (the preset's stage 1: 480)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--flip", choices=["on", "off"], default="on")
    ap.add_argument("--rotate", choices=["on", "off"], default="on")
    ap.add_argument("--init", default="scratch", metavar="scratch|ssl|PATH",
                    help="the stem's start: random, the packaged self-supervised start, or an encoder.safetensors")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--opts", nargs="*", default=[], help="key=value changes to the preset "
                    "(model.img_encoder.stem_extra_convs, model.img_encoder.embed_dim, train.base_lr, ...)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.cfg, args.opts)
    torch.manual_seed(args.seed)
    k = len(class_names()) + 1
    model = PatchClassifier(cfg, k)
    init = "scratch" if args.init == "scratch" else load_stem(model, cfg, args.init)
    seconds = train(model, cfg, args.steps, args.seed, k)
    result = evaluate(model, cfg, args.split, args.images, args.flip == "on", args.rotate == "on")
    print(json.dumps({"steps": args.steps, "samples": args.steps * cfg.data.batch_size, "seed": args.seed,
                      "split": args.split, "flip": args.flip, "rotate": args.rotate, "amp": cfg.train.amp, "init": init,
                      "train_seconds": round(seconds, 1), "opts": args.opts, **result,
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
