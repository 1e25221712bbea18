"""AdamW with the original's weight-decay groups and its per-iteration cosine schedule."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The original's rule: no decay for 1-D parameters and biases. (0-D ``logit_scale``, ``pos_embed`` and
    ``group_token`` are therefore decayed, as in the released training.)"""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: DictConfig, lr: float) -> torch.optim.AdamW:
    """AdamW (fused kernel on CUDA) over the trainable parameters."""
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             fused=fused or None)


def scaled_lrs(cfg: DictConfig, global_batch: int) -> tuple[float, float, float]:
    """(base, warmup, min) learning rates after the linear scaling rule lr x global batch / reference."""
    factor = global_batch / cfg.lr_reference_batch
    return cfg.base_lr * factor, cfg.warmup_lr * factor, cfg.min_lr * factor


def lr_at(step: int, total: int, warmup: int, base: float, warmup_lr: float, min_lr: float) -> float:
    """timm ``CosineLRScheduler`` per iteration (cycle_limit 1, no warmup prefix): linear warmup from
    ``warmup_lr`` over ``warmup`` steps, otherwise a cosine from ``base`` to ``min_lr`` over ``total``."""
    if step < warmup:
        return warmup_lr + (base - warmup_lr) * step / warmup
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * step / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
