"""Sliding-window inference of mmseg 0.18 (``slide_inference``), with the image side computed once.

Windows: crop×crop with the given stride, the last one pushed back inside the image (never padded; an
image smaller than the crop gives smaller windows). Every window is encoded once (the original encoded
it twice) and windows are batched. The image part (group maps and embeddings) is kept apart from the
class part, so that one image can be segmented with many vocabularies at the cost of the text side only.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model import OVSegmentor

Box = tuple[int, int, int, int]  # y1, y2, x1, x2


@dataclass
class ImageEncoding:
    """One image at the processing scale, split into K windows (G groups, D embedding dims).

    size: (H, W) processed size; boxes: K windows; soft: (K, 1, G, h·w) soft assignment at the patch grid
    ``grid``; group_maps: (K, h_c, w_c) uint8, argmax group of the bilinearly upsampled soft map;
    group_emb: (K, G, D) and image_emb: (K, D), L2-normalised; image: (3, H, W) the processed input and
    refined_basis: its refined (K·G, H, W) window-group maps per ``RefineSettings``, filled on use;
    patch_emb: (K, h·w, D) L2-normalised one-patch segments, when encoded with ``per_patch``;
    affinity: the refinement's colour affinities of ``image`` per ``RefineSettings.affinity_key``, filled on use.
    """

    size: tuple[int, int]
    boxes: list[Box]
    grid: tuple[int, int]
    soft: torch.Tensor
    group_maps: torch.Tensor
    group_emb: torch.Tensor
    image_emb: torch.Tensor
    image: torch.Tensor | None = None
    refined_basis: dict[Hashable, torch.Tensor] = field(default_factory=dict)  # RefineSettings ->
    patch_emb: torch.Tensor | None = None
    affinity: dict[Hashable, torch.Tensor] = field(default_factory=dict)  # RefineSettings.affinity_key ->


def slide_boxes(height: int, width: int, crop: int, stride: int) -> list[Box]:
    """Windows in row-major order, exactly as mmseg 0.18 places them."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def group_maps_from_soft(soft: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(K, 1, G, h·w) -> (K, H, W) uint8: argmax over groups of the bilinear (align_corners=False) upsample."""
    k, _, g, _ = soft.shape
    up = F.interpolate(soft.reshape(k, g, *grid), size=size, mode="bilinear", align_corners=False)
    # max(...).indices is argmax (first maximum on ties, both documented) but ~5x faster on CPU along dim 1
    return up.max(dim=1).indices.to(torch.uint8)


View = tuple[int, bool]  # (quarter turns counter-clockwise, then mirrored left-right)


def window_views(flip: bool = False, rotate: bool = False) -> list[View]:
    """The orientations every window is segmented in (test-time augmentation), the window as it is first."""
    return [(turns, mirrored) for turns in (range(4) if rotate else (0,))
            for mirrored in ((False, True) if flip else (False,))]


@dataclass
class CropEncoding:
    """n same-sized windows encoded: soft (n, 1, G, h·w) assignment at the patch ``grid``; group_maps
    (n, h_c, w_c) uint8; group_emb (n, G, D) and image_emb (n, D) L2-normalised; patch_emb (n, h·w, D)
    L2-normalised one-patch segments, or None."""

    soft: torch.Tensor
    group_maps: torch.Tensor
    group_emb: torch.Tensor
    image_emb: torch.Tensor
    patch_emb: torch.Tensor | None
    grid: tuple[int, int]

    def window(self, j: int) -> CropEncoding:
        """Window ``j`` alone (leading dimension kept)."""
        return CropEncoding(self.soft[j : j + 1], self.group_maps[j : j + 1], self.group_emb[j : j + 1],
                            self.image_emb[j : j + 1], None if self.patch_emb is None else self.patch_emb[j : j + 1],
                            self.grid)


def window_boxes(size: tuple[int, int], crop: int, stride: int, mode: str) -> list[Box]:
    """The windows of an image of ``size`` (H, W): sliding (``mode='slide'``) or the whole image."""
    height, width = size
    return slide_boxes(height, width, crop, stride) if mode == "slide" else [(0, height, 0, width)]


@torch.no_grad()
def encode_windows(model: OVSegmentor, image: torch.Tensor, crop: int = 448, stride: int = 224,
                   mode: str = "slide", batch: int = 8, per_patch: bool = False, flip: bool = False,
                   rotate: bool = False) -> ImageEncoding:
    """image (1, 3, H, W) normalised -> ImageEncoding (``encode_images`` for one image)."""
    return encode_images(model, [image], crop, stride, mode, batch, per_patch, flip, rotate)[0]


@torch.no_grad()
def encode_images(model: OVSegmentor, images: list[torch.Tensor], crop: int = 448, stride: int = 224,
                  mode: str = "slide", batch: int = 8, per_patch: bool = False, flip: bool = False,
                  rotate: bool = False) -> list[ImageEncoding]:
    """images, each (1, 3, H, W) normalised -> one ImageEncoding each. ``mode='whole'`` encodes an image as
    one window; ``per_patch`` also keeps every patch as a one-patch segment (``patch_emb``); ``flip`` /
    ``rotate`` also encode every window mirrored left-right / turned by 90, 180 and 270 degrees and add each
    view, its maps turned back, as one more window over the same pixels (test-time augmentation: the
    averaging then mixes the views equally). Windows of view v are windows v·K … v·K + K − 1 of an image's K.
    Windows of all images and views that are shown in the same shape share forward passes (``batch`` each)."""
    views = window_views(flip, rotate)
    boxes = [window_boxes(tuple(image.shape[-2:]), crop, stride, mode) * len(views) for image in images]
    jobs = [(i, box, views[k // (len(image_boxes) // len(views))])
            for i, image_boxes in enumerate(boxes) for k, box in enumerate(image_boxes)]
    parts: list[CropEncoding | None] = [None] * len(jobs)
    for chunk in batches_of_same_shape([(box, view) for _, box, view in jobs], batch):
        crops = torch.cat([_crop(images[jobs[j][0]], jobs[j][1]) for j in chunk])
        out = encode_crops(model, crops, per_patch, [jobs[j][2] for j in chunk])
        for n, j in enumerate(chunk):
            parts[j] = out.window(n)
    encodings, start = [], 0
    for image, image_boxes in zip(images, boxes, strict=True):
        encodings.append(_assemble(image, image_boxes, parts[start : start + len(image_boxes)]))
        start += len(image_boxes)
    return encodings


def _crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    y1, y2, x1, x2 = box
    return image[:, :, y1:y2, x1:x2]


def _assemble(image: torch.Tensor, boxes: list[Box], parts: list[CropEncoding]) -> ImageEncoding:
    """One image's windows (in ``boxes`` order) -> its ImageEncoding."""
    patches = None if parts[0].patch_emb is None else torch.cat([p.patch_emb for p in parts])
    return ImageEncoding(size=tuple(image.shape[-2:]), boxes=boxes, grid=parts[0].grid,
                         soft=torch.cat([p.soft for p in parts]), group_maps=torch.cat([p.group_maps for p in parts]),
                         group_emb=torch.cat([p.group_emb for p in parts]),
                         image_emb=torch.cat([p.image_emb for p in parts]), image=image[0], patch_emb=patches)


def batches_of_same_shape(jobs: list[tuple[Box, View]], batch: int) -> list[list[int]]:
    """Indices of ``jobs`` (window, view) in chunks of at most ``batch`` whose windows are the same size and
    whose views show them in the same shape (an odd number of quarter turns swaps height and width), so that
    each chunk is one forward pass; the jobs' order is kept within a chunk."""
    groups: dict[tuple[int, int, bool], list[int]] = {}
    for i, ((y1, y2, x1, x2), (turns, _)) in enumerate(jobs):
        height, width = y2 - y1, x2 - x1
        groups.setdefault((height, width, height != width and turns % 2 == 1), []).append(i)
    return [idx[s : s + batch] for idx in groups.values() for s in range(0, len(idx), batch)]


def encode_crops(model: OVSegmentor, crops: torch.Tensor, per_patch: bool = False,
                 views: View | list[View] = (0, False)) -> CropEncoding:
    """Same-sized windows (n, 3, h, w) -> their CropEncoding. ``views``: one for all windows or one per
    window (all showing the windows in the same shape, see ``batches_of_same_shape``): encode the windows
    turned and/or mirrored and turn their maps back, so that they line up with the windows' own pixels."""
    per_crop = views if isinstance(views, list) else [views] * len(crops)
    if crops.shape[-2] != crops.shape[-1] and len({turns % 2 for turns, _ in per_crop}) > 1:
        raise ValueError("encode_crops: the views show the windows in different shapes; batch them apart")
    if len(set(per_crop)) == 1:
        shown_crops = show_in_view(crops, per_crop[0])
    else:
        shown_crops = torch.cat([show_in_view(crops[i : i + 1], v) for i, v in enumerate(per_crop)])
    out = model.encode_image(shown_crops, per_patch=per_patch)
    soft, patches, grid = out.assignments[-1].soft, out.patch_feat, out.grid
    if any(v != (0, False) for v in per_crop):
        soft = _orient_each_back(soft, grid, 3, per_crop)  # (n, 1, G, h·w)
        patches = None if patches is None else _orient_each_back(patches, grid, 1, per_crop)  # (n, h·w, D)
        grid = grid_back(grid, per_crop[0])
    return CropEncoding(soft=soft, group_maps=group_maps_from_soft(soft.float(), grid, tuple(crops.shape[-2:])),
                        group_emb=F.normalize(out.image_feat.float(), dim=-1),
                        image_emb=F.normalize(out.image_x.float(), dim=-1),
                        patch_emb=None if patches is None else F.normalize(patches.float(), dim=-1), grid=grid)


def _orient_each_back(x: torch.Tensor, grid: tuple[int, int], dim: int, views: list[View]) -> torch.Tensor:
    """``orient_patch_grid_back`` for each window (dim 0) with its own view."""
    if len(set(views)) == 1:
        return orient_patch_grid_back(x, grid, dim, views[0])
    out = torch.empty_like(x)
    for view in set(views):
        rows = [i for i, v in enumerate(views) if v == view]
        out[rows] = orient_patch_grid_back(x[rows], grid, dim, view)
    return out


def show_in_view(images: torch.Tensor, view: View) -> torch.Tensor:
    """Images (…, h, w) as ``view`` shows them: turned counter-clockwise, then mirrored left-right."""
    turns, mirrored = view
    shown = torch.rot90(images, turns, dims=(-2, -1)) if turns else images
    return shown.flip(-1) if mirrored else shown


def grid_back(grid: tuple[int, int], view: View) -> tuple[int, int]:
    """The (h, w) patch grid of the window itself, from the grid of its ``view``."""
    return (grid[1], grid[0]) if view[0] % 2 else grid


def orient_patch_grid_back(x: torch.Tensor, grid: tuple[int, int], dim: int, view: View) -> torch.Tensor:
    """x with a row-major patch axis ``dim`` over the (h, w) ``grid`` of a window shown in ``view`` -> the
    patches of the window as it is (mirroring undone, then the turns)."""
    turns, mirrored = view
    patches = x.unflatten(dim, grid)
    if mirrored:
        patches = patches.flip(dim + 1)
    if turns:
        patches = torch.rot90(patches, -turns, dims=(dim, dim + 1))
    return patches.flatten(dim, dim + 1)


def average_window_logits(enc: ImageEncoding, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tables (K, G, C) per-window group→class logits -> (averaged logits (C, H, W), count (H, W))."""
    canvas = tables.new_zeros(tables.shape[-1], *enc.size)  # (C, H, W): contiguous for the resize after
    for k, (y1, y2, x1, x2) in enumerate(enc.boxes):
        groups = enc.group_maps[k].long()
        per_pixel = tables[k].t().contiguous().index_select(1, groups.flatten()).view(-1, *groups.shape)
        canvas[:, y1:y2, x1:x2] += per_pixel
    count = window_coverage(enc.boxes, enc.size, tables.device)
    return canvas / count, count


def average_patch_logits(enc: ImageEncoding, tables: torch.Tensor) -> torch.Tensor:
    """tables (K, h·w, C) per-window patch→class logits -> (C, H, W): each window's patch grid resized
    bilinearly (align_corners=False) onto its pixels, then averaged over the windows covering each pixel."""
    canvas = tables.new_zeros(tables.shape[-1], *enc.size)
    for k, (y1, y2, x1, x2) in enumerate(enc.boxes):
        grid_logits = tables[k].t().reshape(1, -1, *enc.grid)
        canvas[:, y1:y2, x1:x2] += F.interpolate(grid_logits, size=(y2 - y1, x2 - x1), mode="bilinear",
                                                 align_corners=False)[0]
    return canvas / window_coverage(enc.boxes, enc.size, tables.device)


def window_coverage(boxes: list[Box], size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(H, W) int32: how many windows cover each pixel."""
    count = torch.zeros(size, dtype=torch.int32, device=device)
    for y1, y2, x1, x2 in boxes:
        count[y1:y2, x1:x2] += 1
    return count


def window_group_basis(enc: ImageEncoding) -> torch.Tensor:
    """(K·G, H, W) maps B[k·G + g] = [pixel in window k and in its group g] / windows covering the pixel.

    ``average_window_logits`` is linear in the tables: its (C, H, W) result is ``einsum('mhw,mc', B,
    tables.reshape(K·G, C))``. A linear refinement of B therefore serves every vocabulary and threshold."""
    height, width = enc.size
    groups = enc.group_emb.shape[1]
    count = window_coverage(enc.boxes, enc.size, enc.group_maps.device)
    basis = torch.zeros(len(enc.boxes), groups, height, width, device=enc.group_maps.device)
    for k, (y1, y2, x1, x2) in enumerate(enc.boxes):
        one_hot = F.one_hot(enc.group_maps[k].long(), groups).permute(2, 0, 1).float()
        basis[k, :, y1:y2, x1:x2] = one_hot / count[y1:y2, x1:x2]
    return basis.reshape(-1, height, width)


def _bilinear_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) weights of torch's bilinear resize along one axis (align_corners=False)."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    weights = torch.zeros(n_out, n_in, device=device, dtype=torch.float64)
    rows = torch.arange(n_out, device=device)
    weights.index_put_((rows, i0), 1 - frac, accumulate=True)
    weights.index_put_((rows, i1), frac, accumulate=True)
    return weights.float()


def labels_and_scores(logits: torch.Tensor, out_size: tuple[int, int], max_elements: int = 2**26
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) averaged logits -> bilinear resize to ``out_size``, softmax over C, then
    (labels (h, w) int64, score (h, w) = max probability). Large outputs go in row bands of bounded size."""
    c = logits.shape[0]
    if c * out_size[0] * out_size[1] <= max_elements:
        probs = F.interpolate(logits[None], size=out_size, mode="bilinear", align_corners=False)[0].softmax(0)
        score, labels = probs.max(dim=0)
        return labels, score
    wy = _bilinear_matrix(logits.shape[1], out_size[0], logits.device)
    wx = _bilinear_matrix(logits.shape[2], out_size[1], logits.device)
    band = max(1, max_elements // (c * out_size[1]))
    labels = torch.empty(out_size, dtype=torch.int64, device=logits.device)
    score = torch.empty(out_size, dtype=logits.dtype, device=logits.device)
    for r0 in range(0, out_size[0], band):
        rows = torch.einsum("oh,chw->cow", wy[r0 : r0 + band], logits) @ wx.t()
        score[r0 : r0 + band], labels[r0 : r0 + band] = rows.softmax(0).max(dim=0)
    return labels, score
