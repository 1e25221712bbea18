"""Helpers shared by the subcommands."""

from __future__ import annotations

from ..errors import OvsegError


def resolve_device(name: str | None) -> str:
    """``auto``/None -> cuda when available, else cpu; a CUDA device asked for without CUDA is an error."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OvsegError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return name
