"""What limits a quickstart model: recognition, grouping, or the group-to-class decision?

Prints one JSON line for a checkpoint on the embedded validation (or test) scenes:
- ``image_top1``: share of images whose pooled embedding ranks a present category first;
- ``group_oracle_miou``: every learned group labelled with its true majority class (the best any
  group-to-class decision could do with these groups);
- ``patch_oracle_miou``: every patch labelled with its true majority class (the same bound for a decision
  per patch, ``--scoring patches``, before refinement);
- ``known_labels_miou``: the harness restricted to the categories present in each image (perfect
  recognition, the model's own grouping and background decision), per background threshold: with fewer
  candidate classes the probabilities are higher, so its best threshold is usually higher;
- ``miou``: the harness with every category, per background threshold;
- ``largest_group_share``: mean share of pixels in an image's largest group (1.0 = all patches in one group);
- ``segment_naming_auc``: do the segments name what they cover? Every segment that owns pixels is scored
  against each class prompt (cosine) and labelled with its majority class; the mean over classes of the
  ROC AUC of class c's score for its own segments against all others (0.5 = no information);
- ``object_vs_background_auc``: ROC AUC of a segment's best class score, object segments against
  background ones.

    python benchmarks/quickstart_diagnostics.py runs/quickstart/stage2/best_miou.safetensors
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import rankdata

from ovseg.checkpoints import load_model
from ovseg.data.scenes.dataset import CaptionedScenes, class_names
from ovseg.engine.validate import scene_seg_config
from ovseg.evaluation.metrics import ConfusionMatrix
from ovseg.inference import Segmenter
from ovseg.quickstart import run_config


def majority_labels(groups: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each group's pixels labelled with the most frequent ground-truth class among them."""
    out = torch.zeros_like(gt)
    for g in groups.unique():
        sel = groups == g
        out[sel] = torch.bincount(gt[sel], minlength=num_classes).argmax()
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count half); NaN without both kinds."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def naming_aucs(scores: np.ndarray, majority: np.ndarray) -> tuple[float, float]:
    """scores (S, C) segment-class cosines, majority (S,) labels (0 = background) -> (mean per-class AUC,
    object-vs-background AUC of the best class score)."""
    per_class = [roc_auc(scores[:, c - 1], majority == c) for c in range(1, scores.shape[1] + 1)]
    return float(np.nanmean(per_class)), roc_auc(scores.max(1), majority > 0)


def diagnose(checkpoint: str, split: str, images: int, thresholds: list[float], scoring: str | None = None) -> dict:
    model, _ = load_model(checkpoint)
    cfg = run_config(checkpoint)
    size, patch = cfg.data.image_size, cfg.model.img_encoder.patch_size
    scenes = CaptionedScenes(split, images, size, clutter=cfg.data.scenes.clutter)
    names = class_names()
    seg = scene_seg_config(size, cfg.evaluate.seg)
    seg.scoring = scoring or seg.scoring
    segmenter = Segmenter(model.eval(), seg)
    text = segmenter.class_embeddings(names)
    k = len(names) + 1
    oracle, patch_oracle = ConfusionMatrix(k), ConfusionMatrix(k)
    full, known = ({t: ConfusionMatrix(k) for t in thresholds} for _ in range(2))
    top1, largest, seg_scores, seg_majority = 0, [], [], []
    with torch.no_grad():
        for i in range(images):
            image, labels = scenes.render(i)
            gt = torch.from_numpy(labels).long()
            enc, _, _ = segmenter.encode(image)
            present = sorted(set(np.unique(labels).tolist()) - {0})
            top1 += int((enc.image_emb[0] @ text.t()).argmax()) + 1 in present
            groups = enc.group_maps[0].long()
            largest.append(float(torch.bincount(groups.flatten()).max()) / groups.numel())
            majority = majority_labels(groups, gt, k)
            oracle.update(majority, gt)
            cells = torch.arange(gt.numel()).view(gt.shape)
            cells = (cells // gt.shape[1] // patch) * gt.shape[1] + (cells % gt.shape[1]) // patch
            patch_oracle.update(majority_labels(cells, gt, k), gt)
            for g in groups.unique():
                seg_scores.append((enc.group_emb[0, g] @ text.t()).numpy())
                seg_majority.append(int(majority[groups == g][0]))
            for t in thresholds:
                full[t].update(segmenter.predict(image, names, bg_thresh=t).labels, gt)
                restricted = segmenter.predict(image, [names[c - 1] for c in present], bg_thresh=t)
                known[t].update(torch.tensor([0, *present])[restricted.labels], gt)
    naming, object_vs_background = naming_aucs(np.stack(seg_scores), np.array(seg_majority))
    return {"checkpoint": checkpoint, "split": split, "images": images, "image_top1": top1 / images,
            "group_oracle_miou": oracle.scores().miou * 100, "patch_oracle_miou": patch_oracle.scores().miou * 100,
            "scoring": seg.scoring,
            "known_labels_miou": {str(t): m.scores().miou * 100 for t, m in known.items()},
            "miou": {str(t): m.scores().miou * 100 for t, m in full.items()},
            "largest_group_share": float(np.mean(largest)),
            "segment_naming_auc": naming, "object_vs_background_auc": object_vs_background}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--scoring", choices=["groups", "patches"], help="default: the checkpoint's evaluate.seg")
    args = p.parse_args()
    print(json.dumps(diagnose(args.checkpoint, args.split, args.images, args.thresholds, args.scoring)))


if __name__ == "__main__":
    main()
