"""ovseg's checkpoint file format: one ``.safetensors`` file with the weights and, in its header metadata,
the resolved config (JSON) — nothing executable; it round-trips bit-exactly. Training state (optimizer,
schedule, step) lives in a separate file next to it (``checkpoints.training``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..fileio import atomic_write

OVSEG_FORMAT = "ovseg/1"


def save_weights(state_dict: dict[str, torch.Tensor], config: dict, path: str | Path,
                 extra: dict[str, str] | None = None) -> None:
    """Weights + resolved config as one safetensors file, written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {"format": OVSEG_FORMAT, "config": json.dumps(config), **(extra or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, header metadata) of a safetensors file."""
    metadata = read_header(path)
    try:
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def read_header(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file, without reading its tensors."""
    require_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header, without reading the tensors."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found")


def safetensors_header_size(head: bytes) -> int | None:
    """The JSON header's length announced by a file's first 9 bytes when they open a safetensors file, else
    None (read before trusting any length the file states)."""
    size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    return size if head[8:9] == b"{" and size > 0 else None


def sniff_format(path: str | Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or raise."""
    require_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    header_len = safetensors_header_size(head)
    if header_len is not None and header_len < 100_000_000:  # checked first: a length byte may be 0x80 or "PK"
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip archive, or a legacy pickle
        return "torch"
    raise CheckpointError(f"{path}: not a checkpoint (neither a torch .pth nor a safetensors file)")
