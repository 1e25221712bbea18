"""Checkpoint files: ovseg's own format and the official OVSegmentor ``.pth``.

ovseg format: one ``.safetensors`` file holding the weights and, in its header metadata, the resolved
config (JSON) — nothing executable, round-trips bit-exactly. Training state (optimizer, schedule, step)
lives in a separate file next to it.

Official format: a ``torch.save`` dict with ``model`` and a pickled OmegaConf ``config``. It is read with
``torch.load(weights_only=True)``: OmegaConf's classes are mapped onto inert stand-ins that only hold
their pickled state (so any omegaconf version of the writer works) and everything else that is not a
tensor or a plain container is refused.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

OVSEG_FORMAT = "ovseg/1"


# ----------------------------------------------------------------------------------------------- writing
def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a killed run never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _require_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found")


def sniff_format(path: str | Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or raise."""
    _require_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:  # checked first: a length byte may be 0x80 or "PK"
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip archive, or a legacy pickle
        return "torch"
    raise CheckpointError(f"{path}: not a checkpoint (neither a torch .pth nor a safetensors file)")


# ------------------------------------------------------------------------------ official .pth (pickle)
class _Pickled:
    """Inert stand-in for a pickled object: keeps its constructor args and state, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class _DictConfig(_Pickled):
    pass


class _ListConfig(_Pickled):
    pass


class _Node(_Pickled):
    pass


class _AnyType:
    """Stand-in for ``typing.Any`` inside OmegaConf metadata."""


_OMEGACONF_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
                    "BytesNode", "PathNode", "ValueNode", "InterpolationResultNode")
_STUBS: list[tuple[Any, str]] = (
    [(_DictConfig, "omegaconf.dictconfig.DictConfig"), (_ListConfig, "omegaconf.listconfig.ListConfig"),
     (_Pickled, "omegaconf.base.ContainerMetadata"), (_Pickled, "omegaconf.base.Metadata"),
     (_Node, "omegaconf.base.UnionNode"), (_AnyType, "typing.Any")]
    + [(_Node, f"omegaconf.nodes.{name}") for name in _OMEGACONF_NODES]
)


def _numpy_globals() -> list[Any]:
    """numpy scalars (e.g. a float64 ``max_miou``) as pickled by numpy 1.x and 2.x."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "bool")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


# Plain types that OmegaConf metadata names (``object_type=dict``, ``key_type=str`` …) and its flags dict.
_PLAIN_GLOBALS: list[Any] = [dict, list, tuple, set, str, int, float, bool, bytes, type(None),
                             collections.defaultdict]


def _plain(obj: Any) -> Any:
    """Stand-ins of OmegaConf containers -> plain dicts/lists (interpolations kept as strings)."""
    if isinstance(obj, _DictConfig | _ListConfig):
        content = obj.__dict__.get("_content")
        if isinstance(content, dict):
            return {str(k): _plain(v) for k, v in content.items()}
        if isinstance(content, list):
            return [_plain(v) for v in content]
        return content
    if isinstance(obj, _Node):
        return _plain(obj.__dict__.get("_val"))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def read_official(path: str | Path) -> dict[str, Any]:
    """The official checkpoint dict with ``config`` as plain data; refuses anything needing code."""
    _require_file(path)
    try:
        with torch.serialization.safe_globals(_STUBS + _numpy_globals() + _PLAIN_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        reason = found.group(1) if found else ""
        raise CheckpointError(
            f"{path}: refused: unpickling it would need arbitrary code ({reason or 'unsupported object'}); "
            "only tensors, plain containers and OmegaConf configs are accepted") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint ({str(e).splitlines()[0]})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' entry, got {type(ckpt).__name__}")
    if "config" in ckpt:
        ckpt["config"] = _plain(ckpt["config"])
    return ckpt
