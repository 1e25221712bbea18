"""The official OVSegmentor ``.pth``: a ``torch.save`` dict with ``model`` and a pickled OmegaConf ``config``.

It is read with ``torch.load(weights_only=True)``: OmegaConf's classes are mapped onto inert stand-ins that
only hold their pickled state (so any omegaconf version of the writer works) and everything else that is
not a tensor or a plain container is refused.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .files import require_file


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


def torch_load_data(path: str | Path, allowed: list, noun: str = "file", accepted: str = "",
                    mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with only ``allowed`` extra globals (inert stand-ins): a pickle that
    needs code is refused, a broken file is one line naming it (``noun``: what the file is called there;
    ``accepted``: what the refusal adds about what is accepted)."""
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        reason = found.group(1) if found else ""
        raise CheckpointError(f"{path}: refused: unpickling it would need arbitrary code "
                              f"({reason or 'unsupported object'}){accepted}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt torch {noun} ({str(e).splitlines()[0][:200]})") from e


def read_official(path: str | Path) -> dict[str, Any]:
    """The official checkpoint dict with ``config`` as plain data; refuses anything needing code."""
    require_file(path)
    ckpt = torch_load_data(path, _STUBS + _numpy_globals() + _PLAIN_GLOBALS, "checkpoint",
                           "; only tensors, plain containers and OmegaConf configs are accepted")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' entry, got {type(ckpt).__name__}")
    if "config" in ckpt:
        ckpt["config"] = _plain(ckpt["config"])
    return ckpt
