"""The images self-supervised pretraining sees: scenes of the embedded generator, from a stream of seeds that
no split uses.

The scene dataset seeds every scene and layout of a split by a text key that starts with the split's integer
seed (``"{seed}/scene/{i}"``, ``"{seed}/layout/{i}/{epoch}"``, ``"{seed}/background/{k}"``, ...). The stream's
keys start with ``ssl/`` instead, so no key, and therefore no scene, of the training, validation or test
split of any seed can come out of it. Only pixels are kept: the caption and the label mask the generator
also makes are dropped. Image ``i`` depends only on (seed, i): a resumed run continues the same stream.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ...data.scenes.dataset import render, sample_scene

PREFIX = "ssl"


def stream_key(seed: int, index: int, part: str) -> str:
    """The random-generator key of image ``index``'s ``part`` ('scene' or 'layout')."""
    return f"{PREFIX}/{seed}/{part}/{index}"


def render_image(seed: int, index: int, size: int, clutter: float) -> np.ndarray:
    """Image ``index`` of the stream: (size, size, 3) uint8."""
    scene = sample_scene(random.Random(stream_key(seed, index, "scene")))
    image, _ = render(scene, size, random.Random(stream_key(seed, index, "layout")), clutter)
    return image


class SceneStream(torch.utils.data.IterableDataset):
    """Batches of stream images from image ``start`` on: (B, 3, S, S) uint8. With several DataLoader workers,
    worker w renders batches w, w + W, ... (the loader interleaves them back into stream order)."""

    def __init__(self, seed: int, batch_size: int, size: int, clutter: float, start: int = 0):
        self.seed, self.batch_size, self.size, self.clutter, self.start = seed, batch_size, size, clutter, start

    def batch(self, number: int) -> torch.Tensor:
        first = self.start + number * self.batch_size
        images = [render_image(self.seed, i, self.size, self.clutter) for i in range(first, first + self.batch_size)]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        number, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            yield self.batch(number)
            number += step
