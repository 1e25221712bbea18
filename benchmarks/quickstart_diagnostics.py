"""What limits a quickstart model: recognition, grouping, or the group-to-class decision?

Prints one JSON line for a checkpoint on the embedded validation (or test) scenes:
- ``image_top1``: share of images whose pooled embedding ranks a present category first;
- ``group_oracle_miou``: every learned group labelled with its true majority class (the best any
  group-to-class decision could do with these groups);
- ``known_labels_miou``: the harness restricted to the categories present in each image (perfect
  recognition, the model's own grouping and background decision), per background threshold: with fewer
  candidate classes the probabilities are higher, so its best threshold is usually higher;
- ``miou``: the harness with every category, per background threshold;
- ``largest_group_share``: mean share of pixels in an image's largest group (1.0 = all patches in one group).

    python benchmarks/quickstart_diagnostics.py runs/quickstart/stage2/best.safetensors
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ovseg.data.scenes.dataset import CaptionedScenes, class_names
from ovseg.engine.validate import scene_seg_config
from ovseg.evaluation.metrics import ConfusionMatrix
from ovseg.factory import load_model
from ovseg.inference import Segmenter


def majority_labels(groups: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each group's pixels labelled with the most frequent ground-truth class among them."""
    out = torch.zeros_like(gt)
    for g in groups.unique():
        sel = groups == g
        out[sel] = torch.bincount(gt[sel], minlength=num_classes).argmax()
    return out


def diagnose(checkpoint: str, split: str, images: int, thresholds: list[float]) -> dict:
    model, cfg = load_model(checkpoint)
    size = cfg.data.image_size
    scenes = CaptionedScenes(split, images, size, clutter=cfg.data.scenes.clutter)
    names = class_names()
    segmenter = Segmenter(model.eval(), scene_seg_config(size, cfg.evaluate.seg.template))
    text = segmenter.class_embeddings(names)
    k = len(names) + 1
    oracle = ConfusionMatrix(k)
    full, known = ({t: ConfusionMatrix(k) for t in thresholds} for _ in range(2))
    top1, largest = 0, []
    with torch.no_grad():
        for i in range(images):
            image, labels = scenes.render(i)
            gt = torch.from_numpy(labels).long()
            enc, _, _ = segmenter.encode(image)
            present = sorted(set(np.unique(labels).tolist()) - {0})
            top1 += int((enc.image_emb[0] @ text.t()).argmax()) + 1 in present
            groups = enc.group_maps[0].long()
            largest.append(float(torch.bincount(groups.flatten()).max()) / groups.numel())
            oracle.update(majority_labels(groups, gt, k), gt)
            for t in thresholds:
                full[t].update(segmenter.predict(image, names, bg_thresh=t).labels, gt)
                restricted = segmenter.predict(image, [names[c - 1] for c in present], bg_thresh=t)
                known[t].update(torch.tensor([0, *present])[restricted.labels], gt)
    return {"checkpoint": checkpoint, "split": split, "images": images, "image_top1": top1 / images,
            "group_oracle_miou": oracle.scores().miou * 100,
            "known_labels_miou": {str(t): m.scores().miou * 100 for t, m in known.items()},
            "miou": {str(t): m.scores().miou * 100 for t, m in full.items()},
            "largest_group_share": float(np.mean(largest))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    args = p.parse_args()
    print(json.dumps(diagnose(args.checkpoint, args.split, args.images, args.thresholds)))


if __name__ == "__main__":
    main()
