"""Zero-shot classification: top-1 / top-5 of labelled images against class-name prompts (spec §2.6).

The original's ImageNet check, run every epoch of its training: every class name is written into the 7
``subset`` templates, their projected text embeddings averaged and L2-normalised (``embed_class_names``, the
original's ``build_text_embedding``); every image, resized to 256 and centre-cropped to 224, is encoded to
its pooled embedding ``image_x`` (the one the image–caption loss contrasts), L2-normalised; its classes are
ranked by cosine.

    result = evaluate_classification(model, cfg.evaluate.cls)
    result.top1, result.top5     # percent
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..config import to_container
from ..errors import OvsegError
from ..fileio import atomic_write_json
from ..images import normalize_0_255
from ..inference.class_names import embed_class_names
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from ..ranks import is_distributed, rank, world_size
from .evaluate import _versions
from .labelled_images import CroppedImages, LabelledImages, collate, read_labelled_images

__all__ = ["ClassificationResult", "evaluate_classification", "read_labelled_images"]
TOP_K = 5


@dataclass
class ClassificationResult:
    """top1 / top5 in percent over ``num_images``; top5 is top-k with k = min(5, num_classes); per_class:
    one entry per class with images (index, name, images, top1, top5); predictions: (n, k) class indices, best
    first, of the n images this process scored (all of them unless sharded), in their order (not in the JSON)."""

    top1: float
    top5: float
    num_images: int
    num_classes: int
    per_class: list[dict]
    settings: dict
    seconds: float
    predictions: torch.Tensor | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("top1", "top5", "num_images", "num_classes", "seconds", "per_class",
                                              "settings")}

    def write(self, output_dir: str | Path) -> Path:
        """``output_dir/results.json``, written atomically."""
        return atomic_write_json(Path(output_dir) / "results.json", self.to_dict())

    def summary(self) -> str:
        return (f"{self.settings.get('data_root', 'classification')}: top-1 {self.top1:.2f}  top-5 {self.top5:.2f}  "
                f"({self.num_images} images, {self.num_classes} classes, {self.seconds:.1f} s)")


def evaluate_classification(model: OVSegmentor, cls_cfg: DictConfig, device: str | torch.device | None = None,
                            progress: bool = True, *, shard: bool = True, num_workers: int | None = None,
                            images: LabelledImages | None = None, tokenizer=None) -> ClassificationResult:
    """Zero-shot top-1 / top-5 of ``model`` on the images ``cls_cfg`` (``evaluate.cls``) names.

    ``device``: where the model runs (moved there; default: where it is); ``shard``: when torch.distributed is
    initialised, every rank scores every world-size-th image and the counts are summed over ranks (all must call);
    ``images``: the already read ``read_labelled_images(cls_cfg)``. The model is left in the train/eval mode
    it came in; a bad folder, CSV, class list or image raises an OvsegError naming it.
    """
    start = time.perf_counter()
    model = getattr(model, "module", model)  # a DDP wrapper: its model
    data = images if images is not None else read_labelled_images(cls_cfg)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ranks = world_size() if shard and is_distributed() else 1
    order = list(range(rank() if ranks > 1 else 0, len(data.paths), ranks))
    dataset = CroppedImages([data.paths[i] for i in order], [data.labels[i] for i in order], cls_cfg.resize,
                            cls_cfg.crop_size)
    te = model.cfg.text_encoder
    tokenizer = tokenizer or build_tokenizer(te.name, te.tokenizer)
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            text = embed_class_names(model, tokenizer, data.classes.names, cls_cfg.template)
            counts, predictions = _count_hits(model, text, dataset, cls_cfg.batch_size, device, num_workers,
                                              progress)
    finally:
        model.train(was_training)
    if ranks > 1:
        dist.all_reduce(counts)
    settings = {"data_root": str(data.source), "world_size": ranks, "device": str(device), **_versions(),
                "cls": to_container(cls_cfg)}
    result = _result(counts.cpu(), data.classes.names, settings, time.perf_counter() - start)
    result.predictions = predictions.cpu()
    return result


def _count_hits(model: OVSegmentor, text: torch.Tensor, dataset: CroppedImages, batch_size: int,
                device: torch.device, num_workers: int | None, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, C) int64 per true class: images, top-1 hits, top-k hits; (N, k) ranked classes per image. Both stay
    on ``device``: no host sync per batch."""
    k = min(TOP_K, text.shape[0])
    counts = torch.zeros(3, text.shape[0], dtype=torch.int64, device=device)
    predictions = [torch.zeros(0, k, dtype=torch.int64, device=device)]  # no images (a rank's empty shard): (0, k)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda")
    with tqdm(total=len(dataset), desc="classification", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            if isinstance(batch, OvsegError):
                raise batch
            pixels, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            image_x = model.encode_image(normalize_0_255(pixels.float())).image_x
            ranked = (F.normalize(image_x.float(), dim=-1) @ text.T).topk(k, dim=-1).indices
            hits = ranked == labels[:, None]
            predictions.append(ranked)
            for row, values in enumerate((torch.ones_like(labels), hits[:, 0], hits.any(dim=-1))):
                counts[row].index_add_(0, labels, values.long())
            bar.update(len(labels))
    return counts, torch.cat(predictions)


def _result(counts: torch.Tensor, names: list[str], settings: dict, seconds: float) -> ClassificationResult:
    images, top1, topk = counts.tolist()
    total = sum(images)
    if total == 0:
        raise OvsegError(f"{settings['data_root']}: no images were scored")
    per_class = [{"index": i, "class": names[i], "images": n, "top1": 100.0 * a / n, "top5": 100.0 * b / n}
                 for i, (n, a, b) in enumerate(zip(images, top1, topk, strict=True)) if n]
    return ClassificationResult(top1=100.0 * sum(top1) / total, top5=100.0 * sum(topk) / total, num_images=total,
                                num_classes=len(names), per_class=per_class, settings=settings,
                                seconds=round(seconds, 2))
