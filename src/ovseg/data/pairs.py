"""Cross-image pairs for stage 2: partners that share an entity with the anchor (spec §2.3)."""

from __future__ import annotations

import random
from collections import defaultdict

import torch


class PairIndex:
    """entity -> sample indices; a partner of sample i is a random sample sharing one of i's entities
    (possibly i itself, as in the original's offline pair lists)."""

    def __init__(self, entities: list[list[str]]):
        self.entities = entities
        self.by_entity: dict[str, list[int]] = defaultdict(list)
        for i, names in enumerate(entities):
            for name in dict.fromkeys(names):
                self.by_entity[name].append(i)

    def partner(self, index: int, rng: random.Random) -> tuple[int, str] | None:
        """(partner index, shared entity), or None when the sample has no entity."""
        if not self.entities[index]:
            return None
        entity = rng.choice(self.entities[index])
        return rng.choice(self.by_entity[entity]), entity


class PairedDataset(torch.utils.data.Dataset):
    """Adds ``cross_image`` (the partner rendered independently) and ``cross_entity`` to each item."""

    def __init__(self, base, pairs: PairIndex, seed: int = 0):
        self.base, self.pairs, self.seed = base, pairs, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def captions(self) -> list[str]:
        return self.base.captions()

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        found = self.pairs.partner(index, random.Random(f"{self.seed}/pair/{index}/{self.epoch}"))
        partner, entity = found if found else (index, "")
        item["cross_image"] = self.base.partner_image(partner) if hasattr(self.base, "partner_image") \
            else self.base[partner]["image"]
        item["cross_entity"] = entity
        return item
