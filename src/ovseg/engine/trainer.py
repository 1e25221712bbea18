"""The training engine: both stages, one process or many (torchrun, srun), CPU (gloo) or GPU (NCCL).

``train(cfg)`` builds the model (stage 2 starts from ``checkpoint.stage1_checkpoint``), runs AdamW with the
original's cosine schedule and linear lr scaling, bf16 autocast where configured, gradient accumulation
and clipping, EMA updates of the momentum encoder, JSONL metrics and a progress bar, periodic validation
with best-checkpoint selection (validation split only, never test), atomic checkpoints and auto-resume.

Distributed training is built to equal one process over the concatenated batch: every world size draws
the same global batches (one ``DistributedSampler`` permutation, split across ranks), contrastive negatives
are gathered from every rank with gradient, the optional prompt losses run over the global batch,
projection heads normalise over the global batch, and DDP averages gradients. Only stage 2's mask loss
keeps the original's per-process normalisation (summed over the process's batch, spec §2.3), so there
W processes equal one process with ``maskloss_weight / W``. Rank 0 logs, validates and writes checkpoints;
every rank resumes from the checkpoint rank 0 names.

This module is the loop; its parts live beside it: ``stages`` (the model a stage starts from),
``objective`` (the losses and their weights), ``precision`` (``train.amp``), ``optim`` (AdamW, schedule),
``validate`` (what validation reads), ``resume`` (which checkpoint to continue from), ``distributed``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import save_model
from ..checkpoints.training import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from ..data.builder import build_collator, build_device_augment, build_train_dataset
from ..errors import ConfigError, OvsegError
from ..fileio import atomic_write
from ..inference.segmenter import check_seg_config
from ..model.text import build_tokenizer
from ..viz.plot import stage_curves_from_records, write_training_plot
from . import distributed as D
from .compilation import compile_hot_modules
from .objective import TrainingObjective
from .optim import build_optimizer, lr_at, scaled_lrs, set_lr
from .precision import StepPrecision
from .resume import find_checkpoint, same_samples_step
from .stages import build_model
from .text_features import TextFeatures
from .validate import Validator, build_validator

log = logging.getLogger(__name__)


class NonFiniteLoss(OvsegError):
    """Training stopped because a loss became NaN or infinite."""


@dataclass
class TrainResult:
    """Where a finished run left its weights, and its best validation (None: no validation)."""

    output: Path
    final: Path
    best: Path | None
    best_val_miou: float | None
    best_bg_thresh: float | None
    steps: int
    best_val_top1: float | None = None


BEST_MIOU = "best_miou.safetensors"  # the original's best_miou.pth: the best validation mIoU so far
BEST_TOP1 = "best_top1.safetensors"  # the best zero-shot classification top-1 so far


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingRun:
    """Everything one training run holds (model, objective, data, optimizer, schedule, state, validation);
    ``train`` drives it. Construction order fixes the random draws: keep it."""

    def __init__(self, cfg: DictConfig, output: Path):
        self.cfg, self.output = cfg, output
        t = cfg.train
        self.device = D.init_from_environment(t.device, t.dist_backend, t.dist_timeout_s)
        self._build_model()
        self.augment = build_device_augment(cfg, self.device, D.rank())  # checks data.augment_device first
        self.dataset = build_train_dataset(cfg, deferred=self.augment is not None)
        self.loader = self._loader()
        self._build_schedule()
        self.optimizer = build_optimizer(self.model, cfg.train, self.base_lr)
        self.precision = StepPrecision.for_training(cfg.train.amp, self.device)
        self.state = {"step": 0, "epoch": 0, "best_val_miou": None, "best_bg_thresh": None, "best_val_top1": None}
        self.validator: Validator | None = build_validator(cfg)
        if self.validator is not None:
            check_seg_config(self.model, cfg.evaluate.seg)
        elif D.is_main():
            log.warning("no validation configured: set evaluate.val_dataset (e.g. voc, with evaluate.seg.data_root) "
                        "and/or evaluate.cls.data_root to validate and keep %s", BEST_MIOU)

    def _build_model(self) -> None:
        """The stage's model, its text-feature cache and the objective (DDP-wrapped under several processes)."""
        cfg = self.cfg
        seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = build_model(cfg, self.device)
        if cfg.train.compile:
            compile_hot_modules(self.model)
        seed_everything(cfg.seed + D.rank())  # then independent randomness per rank (Gumbel noise, dropout)
        te = cfg.model.text_encoder
        self.text = TextFeatures(self.model, build_tokenizer(te.name, te.tokenizer), te.max_length, cache=te.fixed,
                                 cache_dtype=torch.bfloat16 if cfg.train.text_cache_bf16 else None,
                                 buckets=cfg.train.text_buckets)
        self.objective: nn.Module = TrainingObjective(self.model, self.text, cfg.model)
        if D.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)

    def _build_schedule(self) -> None:
        """Steps per epoch and in all, warm-up, the global batch and the learning rates scaled to it."""
        t = self.cfg.train
        self.steps_per_epoch = max(1, self._batches_per_epoch() // t.accumulation_steps)
        self.total = t.max_steps or t.epochs * self.steps_per_epoch
        self.warmup = round(t.warmup_epochs * self.steps_per_epoch)
        self.global_batch = self.cfg.data.batch_size * D.world_size() * t.accumulation_steps
        self.base_lr, self.warmup_lr, self.min_lr = scaled_lrs(t, self.global_batch)

    def _loader(self) -> torch.utils.data.DataLoader:
        """Map-style data: one seeded permutation per epoch, split across ranks (rank r takes every W-th
        sample), so any world size sees the same global batches. Streaming data split themselves."""
        self.sampler = None
        if not isinstance(self.dataset, torch.utils.data.IterableDataset):
            self.sampler = torch.utils.data.DistributedSampler(
                self.dataset, num_replicas=D.world_size(), rank=D.rank(), shuffle=True, seed=self.cfg.seed,
                drop_last=True)
        self.collator = build_collator(self.cfg, self.cfg.seed)
        # workers are started per epoch (not persistent) so that they see the epoch set on dataset and collator
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
            num_workers=self.cfg.data.num_workers, collate_fn=self.collator, drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed))  # its own: never draws from the global RNG

    def _batches_per_epoch(self) -> int:
        """Map-style: the loader's length. Streaming: what the rank with the fewest samples yields, so that
        every rank takes the same number of steps (DDP needs lock-step)."""
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            return self.dataset.batches_per_epoch(self.cfg.data.batch_size, self.cfg.data.num_workers)
        return len(self.loader)

    def warm_text_cache(self) -> None:
        """Encode every caption and question of a known caption pool at once (frozen text encoder only)."""
        captions = getattr(self.dataset, "captions", None)
        pool = captions() if captions is not None and self.text.cache is not None else None
        if pool is None:  # large corpora: features are cached as the captions come
            return
        texts = list(pool)
        collator = build_collator(self.cfg, 0)
        if collator.extractor is not None:
            texts += [collator.extractor.question_answer(c)[0] for c in texts]
        start, cache_file = time.perf_counter(), self.cfg.train.text_cache_file
        if cache_file:
            self.text.load(Path(cache_file))
        self.text.warm(texts)
        self.set_text_center(list(pool))
        if cache_file and D.is_main():
            self.text.save(Path(cache_file))
        log.info("encoded %d texts with the frozen text encoder in %.1f s", len(texts), time.perf_counter() - start)

    def set_text_center(self, captions: list[str]) -> None:
        """Centre the frozen text features on the training captions' mean (a buffer saved with the model)."""
        encoder = self.model.text_encoder
        if not encoder.center or self.state["step"] > 0:
            return
        pooled = torch.stack([self.text.cache[c][0] for c in captions])  # cached features are uncentred
        encoder.feature_mean.copy_(pooled.mean(0).to(encoder.feature_mean))

    def resume(self) -> None:
        """Continue from the last checkpoint; rank 0 chooses it, so that every rank loads the same one."""
        found = find_checkpoint(self.cfg, self.output) if D.is_main() else None
        found = D.broadcast_object(found)
        if isinstance(found, str):  # rank 0's error, raised on every rank
            raise ConfigError(found)
        if found:
            self.state.update(load_training_checkpoint(*map(Path, found), self.model, self.optimizer))
            step = same_samples_step(self.state, self.global_batch, D.world_size(), found[0], D.is_main())
            if step is not None:
                self.state.update(step=step, epoch=step // self.steps_per_epoch)
            log.info("resumed from %s at step %d", found[0], self.state["step"])

    def save(self) -> Path | None:
        """A training checkpoint (weights, optimizer, state) by rank 0; every rank records the global batch."""
        self.state.update(global_batch=self.global_batch, world_size=D.world_size())
        if not D.is_main():
            return None
        return save_training_checkpoint(self.output / "checkpoints", self.model, self.cfg, self.optimizer,
                                        dict(self.state), self.cfg.checkpoint.keep_last)

    def epoch_batches(self, epoch: int) -> Iterator[dict]:
        """The epoch's batches; on resume the ones already consumed are skipped (same order)."""
        for obj in (self.dataset, self.sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        self.collator.epoch = epoch
        self.loader.generator.manual_seed(self.cfg.seed * 1000 + epoch)  # worker seeds, resumable
        wanted = self.steps_per_epoch * self.cfg.train.accumulation_steps
        done = (self.state["step"] - epoch * self.steps_per_epoch) * self.cfg.train.accumulation_steps
        i = 0
        while i < wanted:  # a streaming epoch that skipped samples is topped up from its own start
            before = i
            for batch in self.loader:
                if i >= wanted:
                    break
                if i >= done:
                    yield batch
                i += 1
            if i == before:
                raise OvsegError(f"epoch {epoch}: the training data gave no complete batch of "
                                 f"{self.cfg.data.batch_size} (too few readable samples here; see the warnings)")
        if hasattr(self.dataset, "skipped"):
            self.log({"epoch": epoch, "skipped": self.dataset.skipped()})

    def to_device(self, batch: dict) -> dict:
        """The batch's tensors on this process's device (strings and lists stay); uint8 crops augmented
        there when ``data.augment_device`` defers augmentation from the loader."""
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.augment is not None:
            for key in ("image", "cross_image"):
                if key in batch:
                    batch[key] = self.augment(batch[key], self.state["step"], partner=key == "cross_image")
        return batch

    def step(self, batches: list[dict]) -> dict[str, torch.Tensor]:
        """One optimizer step over ``accumulation_steps`` micro-batches."""
        step = self.state["step"]
        set_lr(self.optimizer, lr_at(step, self.total, self.warmup, self.base_lr, self.warmup_lr, self.min_lr))
        self.model.set_hard_assignment(step >= self.cfg.train.soft_assignment_fraction * self.total)
        parts: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            losses = self._backward(batch, len(batches), last=i == len(batches) - 1)
            parts = {k: parts.get(k, 0) + v.detach() / len(batches) for k, v in losses.items()}
        if self.cfg.train.clip_grad > 0:
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.model.use_maskloss:
            self.model.momentum_update()
        self.state["step"] = step + 1
        return parts

    def _backward(self, batch: dict, micro_batches: int, last: bool) -> dict[str, torch.Tensor]:
        """Losses and gradients of one micro-batch; DDP averages gradients once, after the ``last``."""
        sync = self.objective.no_sync() if D.is_distributed() and not last else contextlib.nullcontext()
        with sync:
            with self.precision.applied(self.model):
                losses = self.objective(self.to_device(batch))
            (losses["total"] / micro_batches).backward()
        return losses

    def optimizer_steps(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Run the epoch's optimizer steps (from the resumed position), yielding each one's loss parts."""
        pending: list[dict] = []
        for batch in self.epoch_batches(epoch):
            pending.append(batch)
            if len(pending) < self.cfg.train.accumulation_steps:
                continue
            parts, pending = self.step(pending), []
            yield parts

    def fit(self, bar: tqdm) -> None:
        """Train until step ``total``, logging, validating and saving on the configured steps."""
        self.throughput = Throughput()
        while self.state["step"] < self.total:
            epoch = self.state["step"] // self.steps_per_epoch
            self.state["epoch"] = epoch
            for parts in self.optimizer_steps(epoch):
                bar.update(1)
                self.after_step(parts, epoch, bar)
                if self.state["step"] >= self.total:
                    break

    def after_step(self, parts: dict[str, torch.Tensor], epoch: int, bar: tqdm) -> None:
        """Log, validate and checkpoint where due (the last step is validated and saved by ``finish``)."""
        cfg, step, every = self.cfg, self.state["step"], self.cfg.checkpoint.every_steps
        self.throughput.add(cfg.data.batch_size * cfg.train.accumulation_steps)
        if step % cfg.train.log_every == 0 or step == self.total or (every and step % every == 0):
            self.report(parts, epoch, bar)
        if self.validation_due(step) and step < self.total:
            self.validate()
        if every and step % every == 0 and step < self.total:
            self.save()

    def validation_due(self, step: int) -> bool:
        """After every ``val_every_steps`` steps and at the end of every ``val_every_epochs``-th epoch."""
        e = self.cfg.evaluate
        every_epochs = e.val_every_epochs * self.steps_per_epoch
        by_steps = e.val_every_steps and step % e.val_every_steps == 0
        return bool(by_steps or (every_epochs and step % every_epochs == 0))

    def report(self, parts: dict[str, torch.Tensor], epoch: int, bar: tqdm) -> None:
        """One metrics.jsonl record; stops on a non-finite loss (every rank takes this branch: steps agree)."""
        step = self.state["step"]
        parts = D.mean_over_ranks(parts)
        check_finite(parts, step, self.output)
        rate = self.throughput.read()
        record = {"step": step, "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                  "logit_scale": float(self.model.scale().detach()), "samples_per_s": rate,
                  **{f"loss_{k}": float(v) for k, v in parts.items()}}
        self.log(record)
        bar.set_postfix(loss=f"{record['loss_total']:.3f}", rate=f"{rate:.0f}/s")

    def validate(self) -> None:
        """Score the model with the configured validators; keep the best models as the original does
        (``best_miou.safetensors`` on segmentation mIoU, ``best_top1.safetensors`` on classification top-1)."""
        if self.validator is None or not D.is_main():
            return
        metrics = self.validator(self.model)
        step = self.state["step"]
        self.log({"step": step, "epoch": step / self.steps_per_epoch, **{f"val_{k}": v for k, v in metrics.items()}})
        self.write_plot()
        miou, thresh = metrics.get("miou"), metrics.get("bg_thresh")
        if miou is not None and (self.state["best_val_miou"] is None or miou > self.state["best_val_miou"]):
            self.state.update(best_val_miou=miou, best_bg_thresh=thresh)
            extra = {"step": str(step), "val_miou": f"{miou:.4f}"}
            if thresh is not None:
                extra["bg_thresh"] = str(thresh)
            save_model(self.model, self.cfg, self.output / BEST_MIOU, extra=extra)
        top1 = metrics.get("top1")
        if top1 is not None and (self.state.get("best_val_top1") is None or top1 > self.state["best_val_top1"]):
            self.state["best_val_top1"] = top1
            extra = {"step": str(step), "val_top1": f"{top1:.4f}", "val_top5": f"{metrics['top5']:.4f}"}
            save_model(self.model, self.cfg, self.output / BEST_TOP1, extra=extra)

    def finish(self) -> TrainResult:
        """Validate and save the last step, write ``final.safetensors``; the run's result."""
        self.validate()  # may update best_val_miou, so the final checkpoint is written after it
        self.save()
        final = self.output / "final.safetensors"
        if D.is_main():
            save_model(self.model, self.cfg, final, extra={"step": str(self.state["step"])})
            if self.validator is None:
                self.write_plot()
        best = self.output / BEST_MIOU
        return TrainResult(self.output, final, best if best.is_file() else None, self.state["best_val_miou"],
                           self.state["best_bg_thresh"], self.state["step"], self.state.get("best_val_top1"))

    def write_plot(self) -> None:
        """``training.png``: the losses and validation so far against samples seen (rank 0). A drawing failure
        is a warning: it must not end a run."""
        try:
            lines = (self.output / "metrics.jsonl").read_text().splitlines()
            records = [r for r in map(json.loads, lines) if "step" in r]  # not the per-epoch skip counts
            batch = self.cfg.data.batch_size * self.cfg.train.accumulation_steps * D.world_size()
            curves = stage_curves_from_records(f"stage {self.cfg.train.stage}", records, batch)
            write_training_plot(self.output / "training.png", [curves])
        except Exception as e:  # noqa: BLE001 - any plotting error
            log.warning("training.png not drawn: %s", e)

    def log(self, record: dict) -> None:
        """One line of ``metrics.jsonl`` (rank 0)."""
        if D.is_main():
            with open(self.output / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


class Throughput:
    """Samples per second over all ranks since the last reading."""

    def __init__(self):
        self.tick, self.seen = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.seen += samples

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.seen * D.world_size() / (now - self.tick)
        self.tick, self.seen = now, 0
        return rate


def check_finite(parts: dict[str, torch.Tensor], step: int, output: Path) -> None:
    """Stop with the step and the loss part when a loss is NaN or infinite (host sync: log steps only)."""
    bad = [k for k, v in parts.items() if k != "grad_norm" and not math.isfinite(float(v))]
    if bad:
        try:
            found = latest_checkpoint(output / "checkpoints")
        except OvsegError:
            found = None
        keep = found[0].name if found else "none yet"
        raise NonFiniteLoss(f"step {step}: loss '{bad[0]}' is {float(parts[bad[0]])}; stopped "
                            f"(last good checkpoint: {keep})")


def train(cfg: DictConfig, output: str | Path | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; checkpoints and metrics go to ``output``.

    Under torchrun or srun every process calls this; it joins the process group (and leaves it at the end
    if it joined it here)."""
    joins = not D.is_distributed()
    D.init_from_environment(cfg.train.device, cfg.train.dist_backend, cfg.train.dist_timeout_s)
    try:
        result = _train(cfg, Path(output or cfg.output))
        D.barrier()  # the other ranks wait for rank 0's final validation and checkpoint
        return result
    finally:
        if joins:
            D.shutdown()


def _train(cfg: DictConfig, output: Path) -> TrainResult:
    """One process's part of the run: config.yaml, resume, the loop, the final validation and weights."""
    output.mkdir(parents=True, exist_ok=True)
    if D.is_main():
        atomic_write(output / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    run = TrainingRun(cfg, output)
    run.warm_text_cache()
    run.resume()
    with tqdm(total=run.total, initial=run.state["step"], desc=f"stage {cfg.train.stage}", disable=not D.is_main(),
              dynamic_ncols=True) as bar:
        run.fit(bar)
    return run.finish()
