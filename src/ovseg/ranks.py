"""This process's place among the training processes: the one reading of torch.distributed's default group.

Low-level on purpose, so that ``data`` and ``losses`` can ask without importing the engine (which
re-exports these from ``engine.distributed``). One process, or no process group: rank 0 of 1.
"""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that logs, validates and writes checkpoints."""
    return rank() == 0
