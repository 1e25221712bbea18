"""The streaming training dataset: every sample exactly once per epoch across ranks × DataLoader workers.

The samples of a source (shards, CSV rows, image files) are numbered 0..N-1 and grouped in blocks that are
read sequentially (a shard; a single row or file for CSV and folder sources). Each epoch:

1. the block order is shuffled from (seed, epoch) — the same permutation in every process;
2. the resulting sequence of N samples is cut into ``world_size × num_workers`` contiguous parts whose
   sizes differ by at most one; part ``rank × num_workers + worker`` belongs to that worker of that rank,
   so the union over ranks and workers is every sample exactly once and a rank's count does not depend
   on its number of workers;
3. each worker reads its part in order (sequential I/O within a shard) through a shuffle buffer of raw
   (still encoded) samples, then decodes and augments.

A sample that cannot be used (corrupt image, unreadable member, missing or empty caption) is skipped and
counted per reason — never replaced by another one. Each worker logs a summary at the end of its part of
the epoch, and ``skipped()`` returns this rank's totals (the counters live in shared memory, so they
include the DataLoader workers').
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np
import torch

from .. import ranks
from .entities import EntityExtractor
from .samples import REASONS, RawSample, SkippedSample

log = logging.getLogger(__name__)
MAX_WORKER_SLOTS = 64  # rows of the shared skip counters (worker ids beyond share rows)
MAX_SKIP_WARNINGS = 3  # per worker and epoch; the rest are counted only


class Source(Protocol):
    """What a reader provides to the streaming dataset (see ``ovseg.data.readers``)."""

    has_pairs: bool

    def __len__(self) -> int: ...
    def block_lengths(self) -> np.ndarray: ...
    def read(self, index: int) -> RawSample: ...
    def image(self, index: int) -> bytes: ...
    def partner(self, index: int, rng: random.Random) -> tuple[int, str] | None: ...
    def captions(self) -> list[str] | None: ...


def part_bounds(total: int, parts: int, part: int) -> tuple[int, int]:
    """[start, stop) of ``part`` when ``total`` positions are cut into ``parts`` near-equal contiguous runs."""
    return total * part // parts, total * (part + 1) // parts


def epoch_order(lengths: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The blocks' reading order for an epoch (identical in every process)."""
    return np.random.default_rng([seed, epoch]).permutation(len(lengths))


def iter_positions(lengths: np.ndarray, order: np.ndarray, start: int, stop: int) -> Iterator[int]:
    """Sample indices at positions [start, stop) of the sequence that reads the blocks in ``order``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    block_start = np.cumsum(lengths) - lengths
    ends = np.cumsum(lengths[order])
    k, pos = int(np.searchsorted(ends, start, side="right")), start
    while pos < stop:
        block = order[k]
        offset = pos - (ends[k] - lengths[block])
        n = min(int(lengths[block] - offset), stop - pos)
        first = int(block_start[block] + offset)
        yield from range(first, first + n)
        pos, k = pos + n, k + 1


def shuffled(items: Iterable, buffer: int, rng: random.Random) -> Iterator:
    """Items in a locally shuffled order: each is drawn at random from a buffer of ``buffer`` pending ones."""
    pending: list = []
    for item in items:
        if len(pending) < buffer:
            pending.append(item)
            continue
        i = rng.randrange(len(pending))
        pending[i], item = item, pending[i]
        yield item
    rng.shuffle(pending)
    yield from pending


class StreamingCaptions(torch.utils.data.IterableDataset):
    """Items {"image": (3, S, S) normalised float, "caption": str, "index": int, "entities": list[str]}, plus
    "cross_image" and "cross_entity" when ``pair_transform`` is given (stage 2).

    ``len()`` is the number of samples this rank reads per epoch (skips not deducted). ``rank`` and
    ``world_size`` default to the process group's, read at construction and at every ``set_epoch`` (in the
    main process, so spawned workers need no process group).
    """

    def __init__(self, source: Source, transform: Callable[[bytes, str], torch.Tensor], seed: int = 0,
                 shuffle_buffer: int = 2000, extractor: EntityExtractor | None = None,
                 pair_transform: Callable[[bytes, str], torch.Tensor] | None = None,
                 rank: int | None = None, world_size: int | None = None):
        self.source, self.transform, self.pair_transform = source, transform, pair_transform
        self.seed, self.shuffle_buffer, self.extractor = seed, shuffle_buffer, extractor
        self._fixed = (rank, world_size) if rank is not None else None
        self.rank, self.world_size = self._fixed or (ranks.rank(), ranks.world_size())
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skipped = torch.zeros(MAX_WORKER_SLOTS, len(REASONS), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; seen by DataLoader workers, persistent ones included."""
        self._epoch.fill_(epoch)
        self.rank, self.world_size = self._fixed or (ranks.rank(), ranks.world_size())

    def __len__(self) -> int:
        start, stop = part_bounds(len(self.source), self.world_size, self.rank)
        return stop - start

    def batches_per_epoch(self, batch_size: int, num_workers: int, drop_last: bool = True) -> int:
        """Batches that the rank with the fewest yields per epoch when every worker batches its own part
        (as the DataLoader does for iterable datasets): the step count that keeps ranks in lock-step."""
        workers, total = max(1, num_workers), len(self.source)

        def batches(rank: int) -> int:
            parts = [part_bounds(total, self.world_size * workers, rank * workers + w) for w in range(workers)]
            return sum((b - a) // batch_size if drop_last else math.ceil((b - a) / batch_size) for a, b in parts)

        return min(batches(r) for r in range(self.world_size))

    def captions(self) -> list[str] | None:
        """All captions when the source holds them in memory and they are few; else None."""
        return self.source.captions()

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far by this rank (all epochs, all workers), per reason."""
        return dict(zip(REASONS, self._skipped.sum(0).tolist(), strict=True))

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, part = int(self._epoch), self.rank * workers + worker
        start, stop = part_bounds(len(self.source), self.world_size * workers, part)
        order = epoch_order(self.source.block_lengths(), self.seed, epoch)
        counts: Counter = Counter()
        raw = self._read(iter_positions(self.source.block_lengths(), order, start, stop), counts, worker)
        try:
            for sample in shuffled(raw, self.shuffle_buffer, random.Random(f"{self.seed}/{epoch}/{part}")):
                item = self._guard(lambda s=sample: self._item(s, epoch), counts, worker)
                if item is not None:
                    yield item
        finally:
            self._report(epoch, worker, stop - start, counts)

    def _read(self, indices: Iterable[int], counts: Counter, worker: int) -> Iterator[RawSample]:
        for index in indices:
            sample = self._guard(lambda i=index: self.source.read(i), counts, worker)
            if sample is not None:
                yield sample

    def _guard(self, fn: Callable, counts: Counter, worker: int):
        """fn(), or None after counting the SkippedSample it raised."""
        try:
            return fn()
        except SkippedSample as e:
            counts[e.reason] += 1
            self._skipped[worker % MAX_WORKER_SLOTS, REASONS.index(e.reason)] += 1
            if sum(counts.values()) <= MAX_SKIP_WARNINGS:
                log.warning("skipped a sample: %s", e)
            return None

    def _item(self, sample: RawSample, epoch: int) -> dict:
        entities = sample.entities
        if entities is None:
            entities = self.extractor.entities(sample.caption) if self.extractor else []
        item = {"image": self.transform(sample.image, sample.key), "caption": sample.caption,
                "index": sample.index, "entities": entities}
        if self.pair_transform is not None:
            item.update(self._partner(sample, epoch))
        return item

    def _partner(self, sample: RawSample, epoch: int) -> dict:
        """Stage 2: a partner sharing an entity (its own image when it has none or the partner is bad)."""
        found = self.source.partner(sample.index, random.Random(f"{self.seed}/pair/{sample.index}/{epoch}"))
        partner, entity = found if found else (sample.index, "")
        try:
            data = sample.image if partner == sample.index else self.source.image(partner)
            image = self.pair_transform(data, f"partner {partner}")
        except SkippedSample as e:
            log.debug("partner of sample %d unusable (%s); using its own image", sample.index, e)
            image = self.pair_transform(sample.image, sample.key)
        return {"cross_image": image, "cross_entity": entity}

    def _report(self, epoch: int, worker: int, planned: int, counts: Counter) -> None:
        skipped = sum(counts.values())
        level = logging.WARNING if skipped else logging.DEBUG
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        log.log(level, "epoch %d, rank %d, worker %d: skipped %d of %d samples%s", epoch, self.rank, worker,
                skipped, planned, f" ({detail})" if detail else "")
