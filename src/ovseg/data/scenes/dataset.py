"""The embedded captioned-scene dataset: deterministic from a seed, generated on the fly, no files.

Each scene holds 1–4 objects of 1–3 categories on a textured, cluttered background, a caption naming
them, its entity list and a per-pixel label mask (0 = background, k = category k; for evaluation only).
Training draws captions from a fixed pool of scenes but re-renders each scene's layout every epoch
(positions, sizes, rotations, background), keeping what the caption states (counts, colours, relations)
true. Validation and test scenes are fixed, layout included, and disjoint in seed from training.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ...images import normalize_0_255
from ..entities import EntityVocabulary
from .captions import RELATIONS, Phrase, choose_word, compose
from .categories import CATEGORIES, COLOURS
from .shapes import shape_mask

SPLIT_SEEDS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


@dataclass
class Scene:
    """phrases: one per category mentioned; instances: (category, colour) in drawing order."""

    phrases: list[Phrase]
    instances: list[tuple[int, str]]
    relation: tuple[int, int, str] | None
    caption: str

    @property
    def entities(self) -> list[str]:
        return [CATEGORIES[p.category].name for p in self.phrases]


def class_names() -> list[str]:
    return [c.name for c in CATEGORIES]


def held_out_names() -> list[str]:
    return [c.held_out for c in CATEGORIES]


def entity_vocabulary() -> EntityVocabulary:
    """Canonical names and the training synonyms (held-out words are deliberately absent)."""
    return EntityVocabulary(synonyms={w: c.name for c in CATEGORIES for w in c.words}, entities=class_names())


def sample_scene(rng: random.Random, colour_word_prob: float = 0.3, synonym_prob: float = 0.3,
                 relation_prob: float = 0.4) -> Scene:
    """A random scene description and its caption."""
    n_cat = rng.choices([1, 2, 3], weights=[35, 40, 25])[0]
    cats = rng.sample(range(len(CATEGORIES)), n_cat)
    budget = 4 - n_cat
    phrases, instances = [], []
    for cat in cats:
        extra = rng.choices(range(budget + 1), weights=[6, 2, 1, 1][: budget + 1])[0]
        budget -= extra
        count = 1 + extra
        cols = [_colour(cat, rng) for _ in range(count)]
        if count > 1 and rng.random() < 0.6:
            cols = [cols[0]] * count
        named = cols[0] if len(set(cols)) == 1 and rng.random() < colour_word_prob else None
        phrases.append(Phrase(cat, count, named, choose_word(cat, rng, synonym_prob)))
        instances += [(cat, c) for c in cols]
    rng.shuffle(instances)
    relation = None
    if n_cat >= 2 and rng.random() < relation_prob:
        a, b = rng.sample(range(n_cat), 2)
        relation = (a, b, rng.choice(list(RELATIONS)))
    return Scene(phrases, instances, relation, compose(phrases, relation, rng))


def _colour(cat: int, rng: random.Random) -> str:
    return rng.choice(CATEGORIES[cat].colours) if rng.random() < 0.75 else rng.choice(list(COLOURS))


def render(scene: Scene, size: int, rng: random.Random, clutter: float = 1.0,
           backgrounds: BackgroundPool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) uint8 image and (size, size) uint8 labels; layouts satisfy the caption."""
    np_rng = np.random.default_rng(rng.getrandbits(63))
    image = backgrounds.draw(np_rng) if backgrounds is not None else _background(size, np_rng, rng, clutter)
    for _ in range(30):
        placed = _layout(scene, size, rng)
        if placed is not None:
            break
    labels = np.zeros((size, size), np.uint8)
    for (cat, colour), mask in zip(scene.instances, placed or _layout(scene, size, rng, check=False), strict=False):
        _paint(image, mask, COLOURS[colour], np_rng)
        labels[mask] = cat + 1
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _layout(scene: Scene, size: int, rng: random.Random, check: bool = True) -> list[np.ndarray] | None:
    """Instance masks, or None when the relation does not hold or an instance is hidden. The relation is
    checked on the centres before any shape is rasterised (rasterising is what a rejected try costs)."""
    poses = []
    for _ in scene.instances:
        r = rng.uniform(0.15, 0.25) * size
        poses.append((rng.uniform(0.55 * r, size - 0.55 * r), rng.uniform(0.55 * r, size - 0.55 * r), r,
                      rng.uniform(0, 2 * math.pi)))
    if check and scene.relation is not None and not _relation_holds(scene, [p[:2] for p in poses], size):
        return None
    masks = [shape_mask(CATEGORIES[cat].shape, size, *pose) for (cat, _), pose in zip(scene.instances, poses,
                                                                                          strict=True)]
    visible, above = masks[:], np.zeros((size, size), bool)
    for i in range(len(masks) - 1, -1, -1):  # later instances are drawn on top
        visible[i] = masks[i] & ~above
        above |= masks[i]
    if check and any(v.sum() < 0.4 * max(m.sum(), 1) for v, m in zip(visible, masks, strict=False)):
        return None
    return visible


def _relation_holds(scene: Scene, centres: list[tuple[float, float]], size: int) -> bool:
    a, b, key = scene.relation
    cat_a, cat_b = scene.phrases[a].category, scene.phrases[b].category
    pa = [c for (cat, _), c in zip(scene.instances, centres, strict=False) if cat == cat_a]
    pb = [c for (cat, _), c in zip(scene.instances, centres, strict=False) if cat == cat_b]
    if key == "left":
        return max(x for x, _ in pa) + 4 < min(x for x, _ in pb)
    if key == "right":
        return min(x for x, _ in pa) > max(x for x, _ in pb) + 4
    if key == "above":
        return max(y for _, y in pa) + 4 < min(y for _, y in pb)
    if key == "below":
        return min(y for _, y in pa) > max(y for _, y in pb) + 4
    return min(math.dist(p, q) for p in pa for q in pb) < 0.55 * size


@functools.lru_cache(maxsize=4)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def _background(size: int, np_rng: np.random.Generator, rng: random.Random, strength: float = 1.0,
                noise: bool = True) -> np.ndarray:
    """Smooth colour field + a periodic texture + thin clutter strokes, float32 (size, size, 3); ``strength``
    scales the texture amplitudes and the number of strokes (0: a plain, slightly noisy background)."""
    base = np_rng.uniform(50, 200, 3).astype(np.float32)
    field = np_rng.normal(0, 28 * strength, (4, 4, 3))
    field = np.asarray(Image.fromarray(np.uint8(np.clip(field + 128, 0, 255))).resize((size, size), Image.BILINEAR))
    image = field.astype(np.float32) + (base - 128)
    yy, xx = _unit_grid(size)
    theta, freq = np_rng.uniform(0, np.pi), np_rng.uniform(4, 14)
    wave = np.sin(np.float32(2 * np.pi * freq) * (xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))))
    image += wave[..., None] * (strength * np_rng.uniform(8, 26) * np_rng.choice([-1, 1], 3)).astype(np.float32)
    strokes = Image.new("RGBA", (size, size))  # alpha marks the stroke pixels
    draw = ImageDraw.Draw(strokes)
    for _ in range(round(rng.randint(3, 9) * strength)):
        pts = [tuple(np_rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(pts, fill=(*(int(v) for v in np_rng.uniform(0, 255, 3)), 255), width=rng.randint(1, 2))
    rgba = np.asarray(strokes)
    stroke = rgba[..., 3] > 0
    image[stroke] = rgba[..., :3][stroke]
    if noise:
        image += np_rng.standard_normal(image.shape, dtype=np.float32) * 6
    return image


class BackgroundPool:
    """Training backgrounds drawn from ``size`` rendered ones, each under one of 8 flips/quarter turns and
    fresh pixel noise: the background is half of a scene's rendering time and need not be new every time
    (a pool of 2 048 gives 16 384 variants). Entry k depends only on (seed, k) and is rendered on first use."""

    def __init__(self, size: int, image_size: int, seed: int, clutter: float):
        self.size, self.image_size, self.seed, self.clutter = size, image_size, seed, clutter
        self.entries: dict[int, np.ndarray] = {}

    def draw(self, np_rng: np.random.Generator) -> np.ndarray:
        k, turns, flip = int(np_rng.integers(self.size)), int(np_rng.integers(4)), bool(np_rng.integers(2))
        if k not in self.entries:
            rng = random.Random(f"{self.seed}/background/{k}")
            plain = _background(self.image_size, np.random.default_rng(rng.getrandbits(63)), rng, self.clutter,
                                noise=False)
            self.entries[k] = np.clip(plain, 0, 255).astype(np.uint8)
        image = np.rot90(self.entries[k], turns)
        image = (image[:, ::-1] if flip else image).astype(np.float32)
        return image + np_rng.standard_normal(image.shape, dtype=np.float32) * 6


def _paint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], np_rng: np.random.Generator) -> None:
    """Fill ``mask`` with ``colour``, a soft lighting gradient and pixel noise."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:  # fully hidden (only in the rare fallback layout that skips the visibility check)
        return
    angle = np_rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)).astype(np.float32)
    ramp = (ramp - ramp.mean()) / (np.ptp(ramp) + 1e-6)
    shade = 1.0 + 0.3 * ramp[:, None]
    image[ys, xs] = np.asarray(colour, np.float32) * shade + np_rng.standard_normal((len(ys), 3), dtype=np.float32) * 7


def to_model_input(image: np.ndarray) -> torch.Tensor:
    """A rendered (S, S, 3) uint8 scene -> the (3, S, S) normalised float tensor the models take."""
    return normalize_0_255(torch.from_numpy(image).permute(2, 0, 1).float())


class CaptionedScenes(torch.utils.data.Dataset):
    """``split`` 'train' (a pool of ``size`` captions, layouts re-drawn per epoch), 'val' or 'test'.

    Items: {"image": (3, S, S) normalised float, "caption": str, "entities": list[str], "index": int,
    "labels": (S, S) int64 (val/test only)}.
    """

    def __init__(self, split: str = "train", size: int = 4096, image_size: int = 64, seed: int = 0,
                 clutter: float = 1.0, background_pool: int = 0,
                 colour_word_prob: float = 0.3, synonym_prob: float = 0.3, relation_prob: float = 0.4):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)}")
        self.split, self.size, self.image_size = split, size, image_size
        self.seed = seed + SPLIT_SEEDS[split]
        self.epoch = 0
        probs = dict(colour_word_prob=colour_word_prob, synonym_prob=synonym_prob, relation_prob=relation_prob)
        self.clutter = clutter
        self.backgrounds = (BackgroundPool(background_pool, image_size, self.seed, clutter)
                            if split == "train" and background_pool > 0 else None)
        self.scenes = [sample_scene(random.Random(f"{self.seed}/scene/{i}"), **probs) for i in range(size)]

    def set_epoch(self, epoch: int) -> None:
        """Training layouts depend on the epoch; val/test layouts never change."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        epoch = self.epoch if self.split == "train" else 0
        rng = random.Random(f"{self.seed}/layout/{index}/{epoch}")
        return render(self.scenes[index], self.image_size, rng, self.clutter, self.backgrounds)

    def entities_of(self, index: int) -> list[str]:
        return self.scenes[index].entities

    def captions(self) -> list[str]:
        return [scene.caption for scene in self.scenes]

    def partner_image(self, index: int) -> torch.Tensor:
        """Scene ``index`` in an independent layout (stage 2's cross image)."""
        rng = random.Random(f"{self.seed}/partner/{index}/{self.epoch}")
        image, _ = render(self.scenes[index], self.image_size, rng, self.clutter, self.backgrounds)
        return to_model_input(image)

    def __getitem__(self, index: int) -> dict:
        image, labels = self.render(index)
        scene = self.scenes[index]
        item = {"image": to_model_input(image), "caption": scene.caption,
                "entities": scene.entities, "index": index}
        if self.split != "train":
            item["labels"] = torch.from_numpy(labels.astype(np.int64))
        return item
