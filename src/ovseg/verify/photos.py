"""End-to-end entries of a reference folder (``shared/reference-e2e`` format): a photo file on disk through
ovseg's own evaluation path (``Segmenter``: decode, keep-ratio resize, normalisation, sliding windows,
per-class decision, resize back) to the label map, every stage under the name the manifest gives it.

An input entry with a ``file`` is a photo; its outputs are ``<name without "input.">.*``. The photos, the
settings, the resize scale and the windows all come from the folder, never from constants.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..config import schema
from ..errors import OvsegError
from ..images import load_image
from ..inference.preprocess import keep_ratio_size, prepare_image, resize_uint8
from ..inference.segmenter import Segmenter
from ..inference.slide import labels_and_scores
from ..model import OVSegmentor
from .rows import Row

Tensors = dict[str, torch.Tensor]


@dataclass
class Photo:
    """A manifest input read from a file: its entry, the file, and the prefix of its outputs."""

    entry: dict
    path: Path
    prefix: str


def photo_inputs(folder: Path, manifest: dict) -> list[Photo]:
    """The inputs that name a file; a name leaving the folder, or a missing file, is a one-line error."""
    photos = []
    for entry in manifest["inputs"]:
        if "file" not in entry:
            continue
        relative = Path(entry["file"])
        if relative.is_absolute() or ".." in relative.parts:
            raise OvsegError(
                f"{folder / 'manifest.json'}: {entry['name']} names {entry['file']!r}, not a file inside the folder"
            )
        path = folder / relative
        if not path.is_file():
            raise OvsegError(f"{path}: no such file (the photo of {entry['name']} in manifest.json)")
        photos.append(Photo(entry, path, entry["name"].removeprefix("input.") + "."))
    return photos


def check_photo(photo: Photo, io: Tensors) -> Row:
    """The file's sha256 against the manifest's and its decoded pixels against the stored input, exactly;
    a failure names the file and what differs."""
    entry, problems, checked = photo.entry, [], ["decoded pixels"]
    if "sha256" in entry:
        digest, listed = hashlib.sha256(photo.path.read_bytes()).hexdigest(), str(entry["sha256"]).lower()
        checked.insert(0, "sha256")
        if digest != listed:
            problems.append(f"sha256 {digest[:12]}… is not the manifest's {listed[:12]}… (the photo was changed)")
    decoded, ref, diff = load_image(photo.path), io.get(entry["name"]), None  # as Segmenter.read does
    if ref is None:
        problems.append(f"{entry['name']} is absent from io.safetensors")
    elif decoded.shape != tuple(ref.shape):
        problems.append(f"decodes to {decoded.shape}, the stored input is {tuple(ref.shape)}")
    else:
        delta = np.abs(decoded.astype(np.int16) - ref.numpy().astype(np.int16))
        wrong, diff = int(np.count_nonzero(delta)), float(delta.max()) if delta.size else 0.0
        if wrong:
            problems.append(f"{wrong} decoded value(s) differ from the stored input")
    note = f"{entry['file']}: " + ("; ".join(problems) or f"{' and '.join(checked)} match")
    return Row(entry["name"], tuple(entry["shape"]), diff, "exact", "FAIL" if problems else "ok", note)


def segmenter_config(config: dict, resized_entry: dict) -> DictConfig:
    """``evaluate.seg`` for the folder: its windows and top-k, and the photo's keep-ratio scale
    (``keep_ratio_scale`` (long, short) of its ``resized_uint8`` entry; else ovseg's default, the original's)."""
    cfg, seg = schema().evaluate.seg, config.get("seg", {})
    cfg.precision = "fp32"  # the reference arithmetic, whatever the default
    test_cfg = seg.get("test_cfg", {})
    cfg.mode = test_cfg.get("mode", cfg.mode)
    cfg.crop_size = int(test_cfg.get("crop_size", [cfg.crop_size])[0])
    cfg.stride = int(test_cfg.get("stride", [cfg.stride])[0])
    cfg.top_k = int(seg.get("top_k", cfg.top_k))
    if "keep_ratio_scale" in resized_entry:
        cfg.max_long_side, cfg.short_side = (int(v) for v in sorted(resized_entry["keep_ratio_scale"], reverse=True))
    return cfg


@torch.no_grad()
def compute_photos(
    model: OVSegmentor, config: dict, manifest: dict, photos: list[Photo], text: torch.Tensor, steps: dict[str, int]
) -> Tensors:
    """Every ``<photo>.*`` output: resized uint8, preprocessed tensor, windows, and per setting the window
    averaged and final logits (strided as the manifest says) and the label map."""
    outputs = {e["name"]: e for e in manifest["outputs"]}
    settings = config.get("seg", {}).get("settings", [])
    got: Tensors = {}
    tokenizer = None
    for photo in photos:
        p = photo.prefix
        seg = Segmenter(model, segmenter_config(config, outputs.get(p + "resized_uint8", {})), tokenizer)
        tokenizer, c = seg.tokenizer, seg.cfg
        rgb = seg.read(photo.path)
        size = keep_ratio_size(*rgb.shape[:2], c.short_side, c.max_long_side, model.cfg.img_encoder.patch_size)
        got[p + "resized_uint8"] = torch.tensor(resize_uint8(rgb, size))
        got[p + "preprocessed"] = prepare_image(rgb, c.short_side, c.max_long_side, model.cfg.img_encoder.patch_size)
        enc, ori, _ = seg.encode(photo.path)  # the product's path from the file, as ``ovseg demo`` runs it
        got[p + "crop_boxes"] = torch.tensor(enc.boxes, dtype=torch.int64)
        for s in settings:
            q = f"{p}{s['name']}."
            if not any(name.startswith(q) for name in outputs):
                continue
            logits, _ = seg.class_logits(enc, text.to(seg.device), s["bg_thresh"] if s["with_bg"] else None)
            final = F.interpolate(logits[None], size=ori, mode="bilinear", align_corners=False)[0]
            got[q + "label_map"] = labels_and_scores(logits, ori)[0]
            for field, value in (("avg_logits_strided", logits), ("final_logits_strided", final)):
                step = steps.get(q + field, 8)
                got[q + field] = value[:, ::step, ::step]
    return {k: v.detach().cpu() for k, v in got.items()}
