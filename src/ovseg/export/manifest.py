"""``export.json``: what a runtime needs besides the two graphs, and the checks applied when reading it.

The export folder may come from anyone, so its manifest is data: the harness settings are merged onto
ovseg's schema (unknown keys, wrong types and ``${…}`` interpolations refused), sizes are bounded, and the
tokenizer it names must be one of ovseg's built-in, offline ones (a folder, hub id or URL is refused; a user
who wants another passes their own tokenizer). File names are fixed here, never read from the manifest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..checkpoints.trust import refuse_interpolations
from ..config import merge_checked, schema, to_container
from ..errors import CheckpointError, OvsegError
from ..fileio import atomic_write_json
from ..images import MEAN, STD
from ..model.text import BUILTIN_TEXT_ENCODERS

FORMAT, FORMAT_VERSION = "ovseg-export", 1
MANIFEST, IMAGE_ONNX, TEXT_ONNX = "export.json", "image_encoder.onnx", "text_encoder.onnx"
IMAGE_PT2, TEXT_PT2 = "image_encoder.pt2", "text_encoder.pt2"
MAX_MANIFEST_BYTES = 1 << 20
NOT_HARNESS = ("dataset", "data_root")  # a benchmark's name and folder: not part of how an image is segmented


@dataclass
class Manifest:
    """The runtime settings of an export. ``seg``: the ``evaluate.seg`` harness (crop, stride, resize, top-k,
    background threshold, templates, scoring …); ``patch_size``: the smallest side the resize keeps;
    ``text_encoder`` / ``tokenizer`` / ``max_length``: how prompts are tokenised; ``logit_scale``: the head's
    scale s (already clamped); ``background_embedding``: the learned background class (D floats) or None;
    ``per_patch``: the image graph also returns ``patch_emb``; ``extra``: descriptive entries (versions,
    inputs and outputs, parity figures) written for people and other runtimes, not read back."""

    seg: DictConfig
    patch_size: int
    text_encoder: str
    tokenizer: str | None
    max_length: int
    logit_scale: float
    background_embedding: list[float] | None
    per_patch: bool
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        seg = {k: v for k, v in to_container(self.seg).items() if k not in NOT_HARNESS}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.extra,
            "harness": seg,
            "preprocess": {"mean": list(MEAN), "std": list(STD), "patch_size": self.patch_size},
            "tokenizer": {
                "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer,
                "max_length": self.max_length,
            },
            "head": {
                "logit_scale": self.logit_scale,
                "background_embedding": self.background_embedding,
                "per_patch": self.per_patch,
            },
        }


def write_manifest(folder: Path, manifest: Manifest) -> None:
    atomic_write_json(folder / MANIFEST, manifest.to_json())


def read_manifest(folder: str | Path, trust_tokenizer: bool = False) -> Manifest:
    """The checked manifest of an export folder; CheckpointError (one line) when it is missing or wrong.
    ``trust_tokenizer``: the caller brings its own tokenizer, so the one named need not be built-in."""
    path = Path(folder) / MANIFEST
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file (an export folder written by 'ovseg export' holds it)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{source}: over {MAX_MANIFEST_BYTES} bytes; not an ovseg export manifest")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{source}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f'{source}: not an ovseg export manifest (no "format": "{FORMAT}")')
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version {raw.get('format_version')!r}; this ovseg reads {FORMAT_VERSION}"
        )
    refuse_interpolations(raw, source, "export")
    pre, tok, head = (_section(raw, name, source) for name in ("preprocess", "tokenizer", "head"))
    if [float(v) for v in _list(pre, "mean", source)] != list(MEAN) or [
        float(v) for v in _list(pre, "std", source)
    ] != list(STD):
        raise CheckpointError(f"{source}: preprocess.mean/std differ from ovseg's; the graphs expect ovseg's")
    return Manifest(
        seg=_harness(raw, source),
        patch_size=_int(pre, "patch_size", source, 1, 1024),
        text_encoder=_name(tok, "text_encoder", source, trust_tokenizer),
        tokenizer=_name(tok, "tokenizer", source, trust_tokenizer, optional=True),
        max_length=_int(tok, "max_length", source, 1, 4096),
        logit_scale=_float(head, "logit_scale", source),
        background_embedding=_background(head, source),
        per_patch=_bool(head, "per_patch", source),
        extra={},
    )


def _harness(raw: dict, source: str) -> DictConfig:
    harness = _section(raw, "harness", source)
    refused = [k for k in NOT_HARNESS if k in harness]
    if refused:
        raise CheckpointError(f"{source}: harness.{refused[0]} is not a harness setting")
    try:
        return merge_checked(schema().evaluate.seg, harness, f"{source}: harness")
    except OvsegError as e:
        raise CheckpointError(str(e)) from e


def _section(raw: dict, key: str, source: str) -> dict:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise CheckpointError(f"{source}: '{key}' is missing or not a mapping")
    return value


def _list(section: dict, key: str, source: str) -> list:
    value = section.get(key)
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise CheckpointError(f"{source}: '{key}' is not a list of numbers")
    return value


def _int(section: dict, key: str, source: str, low: int, high: int) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{source}: '{key}' must be an integer in [{low}, {high}], got {value!r}")
    return value


def _float(section: dict, key: str, source: str) -> float:
    value = section.get(key)
    if not _is_number(value) or not 0 < value <= 1e4:
        raise CheckpointError(f"{source}: '{key}' must be a number in (0, 1e4], got {value!r}")
    return float(value)


def _bool(section: dict, key: str, source: str) -> bool:
    value = section.get(key)
    if not isinstance(value, bool):
        raise CheckpointError(f"{source}: '{key}' must be true or false, got {value!r}")
    return value


def _name(section: dict, key: str, source: str, trusted: bool, optional: bool = False) -> str | None:
    value = section.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not (trusted or value in BUILTIN_TEXT_ENCODERS):
        raise CheckpointError(
            f"{source}: refused tokenizer.{key} {value!r}: an export may only name a built-in "
            f"tokenizer ({', '.join(sorted(BUILTIN_TEXT_ENCODERS))}); to use another, pass your "
            "own (OnnxSegmenter(folder, tokenizer=...))"
        )
    return value


def _background(section: dict, source: str) -> list[float] | None:
    value = section.get("background_embedding")
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= 65536 or not all(_is_number(v) for v in value):
        raise CheckpointError(f"{source}: 'background_embedding' must be null or a list of at most 65536 numbers")
    return [float(v) for v in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
