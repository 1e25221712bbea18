"""The text side of training: tokenise and encode, with a feature cache when the encoder is frozen.

A frozen text encoder (stage 2, or the quickstart's pretrained MiniLM) gives the same features for the
same string every time, so they are computed once per unique string; only the trainable projector runs
per step. A trainable encoder runs every step, with gradients.

Without a cache, a pass runs in length buckets (``buckets`` > 0, see ``text_buckets``): sorted by token
length, each bucket padded to its own longest, the outputs put back in the caller's order. Identical
texts are encoded once where that is the same computation: when no dropout is active in the encoder.
With dropout (a trainable encoder in train mode, as the original's stage 1) each copy keeps its own
random draw, as in one padded pass. ``buckets=0`` is the one padded pass, bit for bit as before.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.functional import pad
from torch.nn.utils.rnn import pad_sequence

from ..errors import ConfigError
from ..fileio import atomic_write
from ..model import OVSegmentor
from .text_buckets import plan_buckets

Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pooled (B, W), tokens (B, L, W), mask (B, L)


class TextFeatures:
    """``encode(texts)`` -> pooled (B, W), tokens (B, L, W), mask (B, L), on the model's device."""

    def __init__(self, model: OVSegmentor, tokenizer, max_length: int, cache: bool, batch: int = 256,
                 cache_dtype: torch.dtype | None = None, buckets: int = 4):
        if not isinstance(buckets, int) or buckets < 0:
            raise ConfigError(f"train.text_buckets: expected an integer >= 0 (0: one padded pass), got {buckets!r}")
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None
        self.batch = batch
        self.cache_dtype = cache_dtype  # autocast dtype for filling the cache (bf16 where it is faster)
        # buckets slice the right-padded batch; a left-padding tokenizer keeps the one padded pass
        self.buckets = buckets if getattr(tokenizer, "padding_side", "right") == "right" else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _run(self, texts: list[str], raw: bool = False, pad_outputs: bool = False) -> Encoded:
        """Encode ``texts`` (no cache). ``pad_outputs``: the padding positions' hidden states are wanted too
        (a decoder that attends to them), so one pass padded to the longest text."""
        return self._run_counted(texts, raw, pad_outputs)[:3]

    def _run_counted(self, texts: list[str], raw: bool = False, pad_outputs: bool = False):
        """``_run`` and each text's token count, on the host (no wait for the device)."""
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        lengths = tok["attention_mask"].sum(1)
        if self.buckets and not pad_outputs:
            return *self._run_buckets(tok["input_ids"], tok["attention_mask"], raw), lengths
        ids, mask = self._upload(tok["input_ids"]), self._upload(tok["attention_mask"])
        encoder = self.model.text_encoder
        pooled, tokens = encoder.encode_raw(ids, mask) if raw else encoder(ids, mask)
        return pooled, tokens, mask, lengths

    def _run_buckets(self, ids: torch.Tensor, mask: torch.Tensor, raw: bool) -> Encoded:
        """One encoder call per length bucket; tokens past a bucket's width are zeros (masked)."""
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        ends = plan_buckets(lengths.tolist(), self.buckets)  # host-side: the tokenizer's tensors are on the CPU
        widths = [int(lengths[order[end - 1]]) for end in ends]
        ids, sorted_mask, longest = self._upload(ids[order]), self._upload(mask[order]), ids.shape[1]
        encoder, parts, start = self.model.text_encoder, [], 0
        run = encoder.encode_raw if raw else encoder
        for end, width in zip(ends, widths, strict=True):
            pooled, tokens = run(ids[start:end, :width], sorted_mask[start:end, :width])
            parts.append((pooled, pad(tokens, (0, 0, 0, longest - width))))
            start = end
        back = self._upload(torch.argsort(order))
        pooled = torch.cat([p for p, _ in parts])[back]
        tokens = torch.cat([t for _, t in parts])[back]
        return pooled, tokens, self._upload(mask)

    def deterministic(self) -> bool:
        """Whether the encoder gives the same output for the same text (no active dropout): only then are
        duplicates encoded once."""
        encoder = self.model.text_encoder
        return not any(isinstance(m, nn.Dropout) and m.training and m.p > 0 for m in encoder.modules())

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

    def encode(self, texts: list[str], pad_outputs: bool = False) -> Encoded:
        """pooled, tokens, mask of ``texts`` in their order, mask padded to the longest text. Tokens at
        padding positions are what one padded pass computes there only with ``pad_outputs`` (and no cache);
        otherwise they are unspecified (zeros, or the outputs of a shorter padding): a caller that reads
        them must ask for ``pad_outputs``."""
        if self.cache is None:
            return self._encode_unique(texts, pad_outputs)[:3]
        self.warm(texts)
        pooled = self.model.text_encoder.centre(self._upload(torch.stack([self.cache[t][0] for t in texts])))
        seqs = [self.cache[t][1] for t in texts]
        tokens = pad_sequence(seqs, batch_first=True)
        mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
        return pooled, self._upload(tokens), self._upload(mask)

    def encode_many(self, passes: dict[str, list[str]], pad_outputs: tuple[str, ...] = ()) -> dict[str, Encoded]:
        """Several passes of one step (captions, answers, prompts …), each as ``encode`` gives it, computed
        together: one set of length buckets for all, and a text in two passes encoded once when the encoder
        is deterministic. The passes named in ``pad_outputs`` run alone, padded (``encode``'s argument).
        Without buckets, or with a cache, every pass runs alone, in the given order."""
        passes = {name: texts for name, texts in passes.items() if texts}
        if self.cache is not None or not self.buckets:
            return {name: self.encode(texts, name in pad_outputs) for name, texts in passes.items()}
        out = {name: self.encode(passes[name], pad_outputs=True) for name in pad_outputs if name in passes}
        shared = {name: texts for name, texts in passes.items() if name not in out}
        pooled, tokens, mask, lengths = self._encode_unique([t for texts in shared.values() for t in texts])
        start = 0
        for name, texts in shared.items():
            end = start + len(texts)
            width = int(lengths[start:end].max())  # the pass's own longest text, as alone
            out[name] = pooled[start:end], tokens[start:end, :width], mask[start:end, :width]
            start = end
        return {name: out[name] for name in passes}

    def _encode_unique(self, texts: list[str], pad_outputs: bool = False):
        """``_run_counted`` over the distinct texts when that is the same computation (buckets on, no
        dropout), expanded back to ``texts``."""
        unique = list(dict.fromkeys(texts))
        if len(unique) == len(texts) or not self.buckets or pad_outputs or not self.deterministic():
            return self._run_counted(texts, pad_outputs=pad_outputs)
        pooled, tokens, mask, lengths = self._run_counted(unique)
        index = {t: i for i, t in enumerate(unique)}
        back = torch.tensor([index[t] for t in texts])
        device_back = self._upload(back)
        return pooled[device_back], tokens[device_back], mask[device_back], lengths[back]

    def _upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """To the model's device without waiting for the queued GPU work (pinned, non-blocking copy)."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)
