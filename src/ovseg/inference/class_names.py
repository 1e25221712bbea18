"""Class names → L2-normalised text embeddings (prompt templates and synonyms averaged)."""

from __future__ import annotations

import torch

from ..errors import OvsegError
from ..model import OVSegmentor
from ..prompts import get_templates


def parse_class_names(names: list[str]) -> list[list[str]]:
    """Each class as its list of synonyms: ``"person|man|woman"`` -> ["person", "man", "woman"]."""
    classes = []
    for name in names:
        synonyms = [s.strip() for s in name.split("|") if s.strip()]
        if not synonyms:
            raise OvsegError(f"empty class name in the vocabulary: '{name}'")
        classes.append(synonyms)
    if not classes:
        raise OvsegError("the vocabulary is empty: give at least one class name")
    return classes


def display_name(name: str) -> str:
    """The first synonym, as shown in legends and tables."""
    return name.split("|")[0].strip()


@torch.no_grad()
def embed_class_names(model: OVSegmentor, tokenizer, names: list[str], templates: str | list[str] = "simple",
                      batch: int = 256) -> torch.Tensor:
    """(N, D) class embeddings: projected [CLS] of every template × synonym, averaged per class,
    then L2-normalised (the original's ``build_text_embedding``; one synonym reproduces it exactly)."""
    templates = get_templates(templates) if isinstance(templates, str) else templates
    classes = parse_class_names(names)
    prompts = [t.format(s) for syns in classes for s in syns for t in templates]
    owner = torch.tensor([i for i, syns in enumerate(classes) for _ in syns for _ in templates])
    device = next(model.parameters()).device
    max_length = model.cfg.text_encoder.max_length
    chunks = []
    for start in range(0, len(prompts), batch):
        tok = tokenizer(prompts[start : start + batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        chunks.append(model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).text_x.float())
    text_x = torch.cat(chunks)
    sums = torch.zeros(len(classes), text_x.shape[-1], device=device).index_add_(0, owner.to(device), text_x)
    counts = torch.bincount(owner, minlength=len(classes)).to(device).unsqueeze(1)
    return torch.nn.functional.normalize(sums / counts, dim=-1)
