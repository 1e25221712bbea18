"""torch.distributed for training: initialisation from torchrun's or Slurm's environment, and helpers that
degrade to no-ops in one process.

``init_from_environment`` is called once by ``ovseg train``. It recognises

- torchrun / ``python -m torch.distributed.run`` (single or multi-node, static or c10d rendezvous):
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
- Slurm (``srun ovseg train …``, one task per GPU): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``;
  the master is the first host of ``SLURM_JOB_NODELIST`` unless ``MASTER_ADDR`` is set, the port
  ``MASTER_PORT`` or one derived from the job id (so that two jobs on one node do not collide);

and otherwise runs as one process. The backend is NCCL when the processes train on CUDA, gloo on CPU.
``rank``, ``world_size``, ``is_distributed`` and ``is_main`` live in ``ovseg.ranks`` (data and losses need
them too) and are re-exported here.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from typing import get_args

import torch
import torch.distributed as dist

from ..config import DistBackend
from ..errors import OvsegError
from ..ranks import is_distributed, is_main, rank, world_size

__all__ = ["DistributedError", "Launch", "barrier", "broadcast_object", "first_slurm_host", "gather_objects",
           "init_from_environment", "is_distributed", "is_main", "mean_over_ranks", "pick_backend", "rank",
           "read_launch", "shutdown", "world_size"]

log = logging.getLogger(__name__)


class DistributedError(OvsegError):
    """The process group could not be formed (unreachable rendezvous, bad environment)."""


@dataclass(frozen=True)
class Launch:
    """Where this process sits in the job, read from the launcher's environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"  # none | torchrun | slurm


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def read_launch(env: dict[str, str] | None = None) -> Launch:
    """The launcher's view of this process (torchrun wins over Slurm when both are present)."""
    env = dict(os.environ if env is None else env)
    if "WORLD_SIZE" in env and "RANK" in env:
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                      env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        job = int(env.get("SLURM_JOB_ID", 0) or 0)
        addr = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        port = int(env.get("MASTER_PORT", 20000 + job % 20000))
        return Launch(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                      addr, port, "slurm")
    return Launch()


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("gpu[03-05,07],cpu1" -> "gpu03"); asks ``scontrol`` when
    available, which knows every syntax."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    first = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not first:
        return nodelist
    prefix, ranges = first.group(1), first.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def pick_backend(requested: str, device_type: str) -> str:
    if requested == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if requested not in get_args(DistBackend):
        raise DistributedError(f"train.dist_backend: expected one of {get_args(DistBackend)}, got '{requested}'")
    if requested == "nccl" and device_type != "cuda":
        raise DistributedError("train.dist_backend=nccl needs CUDA devices (use gloo on CPU)")
    return requested


def init_from_environment(device: str, backend: str = "auto", timeout_s: int = 600) -> torch.device:
    """Join the job's process group if launched by torchrun or srun; return this process's device.

    ``device`` is ``auto``, ``cpu`` or ``cuda``; under a launcher every process takes ``cuda:LOCAL_RANK``.
    A rank that cannot reach the rendezvous fails after ``timeout_s`` with a message naming the address.
    """
    launch = read_launch()
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device.split(":")[0]
    if device_type == "cuda" and not torch.cuda.is_available():
        raise DistributedError(f"train.device={device}: no CUDA device is visible to this process")
    if is_distributed():  # already joined (e.g. by the caller): only pick this process's device
        return torch.device("cuda", launch.local_rank) if device_type == "cuda" else torch.device("cpu")
    if launch.world_size <= 1:
        return torch.device(device if device_type == "cuda" and ":" in device else device_type)
    if device_type == "cuda":
        if launch.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"rank {launch.rank}: LOCAL_RANK {launch.local_rank} but only "
                                   f"{torch.cuda.device_count()} CUDA devices are visible on this node")
        torch.cuda.set_device(launch.local_rank)
    chosen = pick_backend(backend, device_type)
    os.environ.setdefault("MASTER_ADDR", launch.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launch.master_port))
    try:
        dist.init_process_group(chosen, init_method="env://", rank=launch.rank, world_size=launch.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # store timeouts and connection errors come in several types
        raise DistributedError(
            f"rank {launch.rank}/{launch.world_size} ({launch.launcher}): could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s} s "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    log.info("rank %d/%d joined the %s process group (%s)", launch.rank, launch.world_size, chosen, launch.launcher)
    if launch.rank != 0:  # one voice: the other ranks report warnings and errors only
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    return torch.device("cuda", launch.local_rank) if device_type == "cuda" else torch.device("cpu")


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors over ranks (one collective; for logging, so every rank reports the same)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(stacked)
    return dict(zip(keys, stacked / world_size(), strict=True))


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
