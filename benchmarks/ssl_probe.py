"""How much a self-supervised start tells the scene categories apart, before any caption: a linear probe.

Each patch of the quickstart encoder (stem, position table, pre-grouping blocks; ``--init`` files of
``ovseg pretrain-ssl`` or none for a random start) gets the class of the majority of its pixels in the
scene's mask (11 classes, background included); a softmax-regression probe on frozen patch tokens is fitted
on ``--train`` training scenes and scored on the validation scenes (patch accuracy and patch mIoU). A cheap
proxy (a minute) for what a 12-minute caption training would show; the probe never sees a caption, and the
masks are used here only to measure.

    python benchmarks/ssl_probe.py --init none runs/ssl/dino/encoder.safetensors runs/ssl/ibot/encoder.safetensors \
        runs/quickstart/stage1/best_miou.safetensors
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ovseg.config import load_config
from ovseg.data.builder import scene_split
from ovseg.data.scenes.dataset import to_model_input
from ovseg.engine.ssl.backbone import SslBackbone
from ovseg.factory import preset_path


def patch_data(backbone: SslBackbone, scenes, count: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N·h·w, C) frozen patch tokens and (N·h·w,) majority classes of ``count`` scenes."""
    feats, labels = [], []
    for start in range(0, count, 64):
        batch = [scenes.render(i) for i in range(start, min(count, start + 64))]
        images = torch.stack([to_model_input(img) for img, _ in batch])
        with torch.no_grad():
            feats.append(backbone(images).flatten(0, 1))
        masks = torch.from_numpy(np.stack([m for _, m in batch])).long()  # (B, S, S) class per pixel
        onehot = F.one_hot(masks, 11).permute(0, 3, 1, 2).float()
        labels.append(F.avg_pool2d(onehot, patch).argmax(1).flatten())  # majority class per patch
    return torch.cat(feats), torch.cat(labels)


def probe(train: tuple, val: tuple, steps: int = 300) -> dict:
    """Fit softmax regression on standardised features; patch accuracy and mIoU on ``val``."""
    (xt, yt), (xv, yv) = train, val
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mean) / std, (xv - mean) / std
    head = torch.nn.Linear(xt.shape[1], 11)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(xt), yt) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = head(xv).argmax(1)
    ious = []
    for c in range(11):
        union = ((pred == c) | (yv == c)).sum().item()
        if (yv == c).any():
            ious.append(((pred == c) & (yv == c)).sum().item() / union)
    return {"patch_acc": (pred == yv).float().mean().item() * 100, "patch_miou": 100 * sum(ious) / len(ious)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", nargs="+", default=["none"],
                   help="encoder files of ovseg pretrain-ssl, trained ovseg models (.safetensors), or none")
    p.add_argument("--train", type=int, default=512)
    p.add_argument("--val", type=int, default=128)
    args = p.parse_args()
    cfg = load_config(preset_path("quickstart/stage1"), [f"data.scenes.val_size={args.val}"])
    train_scenes, val_scenes = scene_split(cfg, "train"), scene_split(cfg, "val")
    for init in args.init:
        torch.manual_seed(0)
        backbone = SslBackbone(cfg.model.img_encoder).eval()
        if init != "none":
            state = load_file(init)  # an ovseg-ssl file, or a trained model's (its image encoder's tensors)
            if any(k.startswith("img_encoder.") for k in state):
                state = {k[12:]: v for k, v in state.items() if k.startswith("img_encoder.")}
            own = backbone.encoder_state()
            state = {k: v for k, v in state.items() if k in own}
            backbone.patch_embed.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("patch_embed.")})
            backbone.blocks.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("layers.0.blocks.")})
            backbone.pos_embed.data.copy_(state["pos_embed"])
            assert set(state) == set(own), "not an encoder file of this model"
        patch = cfg.model.img_encoder.patch_size
        result = probe(patch_data(backbone, train_scenes, args.train, patch),
                       patch_data(backbone, val_scenes, args.val, patch))
        print(json.dumps({"init": init, **{k: round(v, 2) for k, v in result.items()}}), flush=True)


if __name__ == "__main__":
    main()
