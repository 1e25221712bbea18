"""The text side of training: tokenise and encode, with a feature cache when the encoder is frozen.

A frozen text encoder (stage 2, or the quickstart's pretrained MiniLM) gives the same features for the
same string every time, so they are computed once per unique string; only the trainable projector runs
per step. A trainable encoder runs every step, with gradients.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from ..fileio import atomic_write
from ..model import OVSegmentor


class TextFeatures:
    """``encode(texts)`` -> pooled (B, W), tokens (B, L, W), mask (B, L), on the model's device."""

    def __init__(self, model: OVSegmentor, tokenizer, max_length: int, cache: bool, batch: int = 256,
                 cache_dtype: torch.dtype | None = None):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None
        self.batch = batch
        self.cache_dtype = cache_dtype  # autocast dtype for filling the cache (bf16 where it is faster)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _run(self, texts: list[str], raw: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        ids, mask = self._upload(tok["input_ids"]), self._upload(tok["attention_mask"])
        encoder = self.model.text_encoder
        pooled, tokens = encoder.encode_raw(ids, mask) if raw else encoder(ids, mask)
        return pooled, tokens, mask

    @torch.no_grad()
    def warm(self, texts: list[str]) -> None:
        """Fill the cache for ``texts`` in large batches (no-op without a cache)."""
        if self.cache is None:
            return
        todo = sorted(dict.fromkeys(t for t in texts if t not in self.cache), key=len)  # similar lengths pad less
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            with torch.autocast(self.device.type, dtype=self.cache_dtype or torch.float32,
                                enabled=self.cache_dtype is not None):
                pooled, tokens, mask = self._run(chunk, raw=True)  # cached uncentred; centred on use
            for i, text in enumerate(chunk):
                n = int(mask[i].sum())
                self.cache[text] = (pooled[i].float().cpu(), tokens[i, :n].float().cpu())

    def load(self, path: Path) -> None:
        """Add the features saved by ``save`` (same text encoder; the file's key guards that)."""
        if self.cache is None or not path.is_file():
            return
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == self.key():
            self.cache.update({t: (p, k) for t, p, k in zip(saved["texts"], saved["pooled"], saved["tokens"],
                                                               strict=True)})

    def save(self, path: Path) -> None:
        if self.cache is None:
            return
        texts = list(self.cache)
        payload = {"key": self.key(), "texts": texts, "pooled": [self.cache[t][0] for t in texts],
                   "tokens": [self.cache[t][1] for t in texts]}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))

    def key(self) -> str:
        """Identifies the frozen encoder: its name and a checksum of its first and last weights."""
        params = list(self.model.text_encoder.parameters())
        total = float(params[0].double().sum() + params[-1].double().sum())
        return f"{self.model.cfg.text_encoder.name}/{self.max_length}/{self.cache_dtype}/{total:.6e}"

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cache is None:
            return self._run(texts)
        self.warm(texts)
        pooled = self.model.text_encoder.centre(self._upload(torch.stack([self.cache[t][0] for t in texts])))
        seqs = [self.cache[t][1] for t in texts]
        tokens = pad_sequence(seqs, batch_first=True)
        mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
        return pooled, self._upload(tokens), self._upload(mask)

    def _upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """To the model's device without waiting for the queued GPU work (pinned, non-blocking copy)."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)
