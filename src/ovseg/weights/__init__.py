"""Weights shipped inside the package, each with a record of exactly how it was made.

``quickstart_ssl.safetensors`` (when present) is the quickstart image encoder's self-supervised start
(``ovseg pretrain-ssl``); ``quickstart_ssl.json`` is its record: the command, the resolved config, seed,
steps, software versions, minutes, machine and the file's sha256. ``verify_record`` checks a record against
its file, so a file that was replaced or damaged is caught before it initialises anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..fileio import atomic_write_json

HERE = Path(__file__).parent
QUICKSTART_SSL = HERE / "quickstart_ssl.safetensors"
MAX_RECORD_BYTES = 1_000_000  # a record is a few kB (its config included)
SOFTWARE = ("ovseg", "torch", "numpy", "safetensors", "omegaconf")


@dataclass
class WeightsRecord:
    """How a weights file was made. ``minutes``: wall-clock minutes of the run; ``machine``: the CPU or GPU
    and thread count; ``software``: package -> version (and ``python``)."""

    file: str
    sha256: str
    command: str
    config: dict[str, Any]
    seed: int
    steps: int
    minutes: float
    machine: str
    software: dict[str, str]


def record_path(weights: str | Path) -> Path:
    """The record beside a weights file: same name, ``.json``."""
    return Path(weights).with_suffix(".json")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_description(device: str) -> str:
    """'<processor>, N threads' on the CPU; the GPU's name on CUDA."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))}, CUDA {torch.version.cuda}"
    return f"{_cpu_name()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_record(weights: str | Path, **values: Any) -> WeightsRecord:
    """Record ``weights`` (its sha256 computed here) beside it, as ``record_path(weights)``."""
    record = WeightsRecord(file=Path(weights).name, sha256=sha256_of(weights), **values)
    atomic_write_json(record_path(weights), asdict(record))
    return record


def read_record(path: str | Path) -> WeightsRecord:
    """A record file, checked for its size, JSON and fields; CheckpointError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights record not found")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes, more than a weights record")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a JSON weights record ({e})") from e
    names = [f.name for f in fields(WeightsRecord)]
    missing = [n for n in names if not isinstance(raw, dict) or n not in raw]
    if missing:
        raise CheckpointError(f"{path}: weights record without '{missing[0]}'")
    return WeightsRecord(**{n: raw[n] for n in names})


def verify_record(weights: str | Path, record: str | Path | None = None) -> WeightsRecord:
    """Check that ``record`` (default: the one beside ``weights``) describes ``weights``: the sha256 decides
    (``file`` is the name it was written under; a shipped copy may be renamed). Returns the record;
    CheckpointError (one line) on any difference."""
    weights = Path(weights)
    found = read_record(record or record_path(weights))
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    actual = sha256_of(weights)
    if actual != found.sha256:
        raise CheckpointError(f"{weights}: sha256 {actual} differs from its record's {found.sha256}")
    return found
