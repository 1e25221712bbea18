"""Batches for training: images, captions, masked-entity questions and answers, cross-image partners."""

from __future__ import annotations

import random

import torch

from ..prompts import get_templates
from .entities import EntityExtractor


class CaptionCollator:
    """Stacks images and builds the text side of each sample (spec §2.2): the question is the caption
    with its entity words masked, the answer "<random template prefix> e1 and e2 …"."""

    def __init__(self, extractor: EntityExtractor | None, answer_templates: str = "full",
                 cross_entity_template: str = "A photo of {}", seed: int = 0):
        self.extractor = extractor
        self.prefixes = [t.split("{}")[0] for t in get_templates(answer_templates)]
        self.cross_template = cross_entity_template
        self.seed = seed
        self.epoch = 0  # set by the trainer before each epoch (workers receive a fresh copy per epoch)

    def __call__(self, items: list[dict]) -> dict:
        batch = {"image": torch.stack([it["image"] for it in items]),
                 "caption": [it["caption"] for it in items],
                 "index": torch.tensor([it["index"] for it in items])}
        if self.extractor is not None:
            # seeded per sample and epoch: a resumed run, and any number of ranks, draw the same prompts
            qa = [self.extractor.question_answer(it["caption"], self._prefix(it["index"])) for it in items]
            batch["question"] = [q for q, _, _ in qa]
            batch["answer"] = [a for _, a, _ in qa]
            batch["entities"] = [e for _, _, e in qa]
        else:
            batch["entities"] = [list(it.get("entities", [])) for it in items]
        if "cross_image" in items[0]:
            batch["cross_image"] = torch.stack([it["cross_image"] for it in items])
            batch["cross_entity"] = [self.cross_template.format(it["cross_entity"]) for it in items]
        return batch

    def _prefix(self, index: int) -> str:
        return random.Random(f"{self.seed}/{index}/{self.epoch}").choice(self.prefixes)
