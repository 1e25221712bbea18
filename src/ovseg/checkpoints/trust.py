"""The trust boundary: what the config stored in a checkpoint may say.

A checkpoint may come from anyone. Its config describes an architecture and nothing else: the text encoder is
one of ovseg's built-in ones, transformers settings are plain typed fields (never loader arguments such as
``trust_remote_code`` or ``revision``), no value is an interpolation (``${oc.env:…}`` is never resolved),
sizes are bounded, and only the ``model`` section is read (paths, data and training settings in a file are
ignored, and so is how its image encoder once started: ``init_checkpoint`` and its kin). A user who wants
another text encoder names it on their own command line or in their own config
(``--opts model.text_encoder.name=FOLDER``), which is applied after this check. ``check_shapes`` then
compares the model a config describes, built on the meta device (nothing allocated), with the file's tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.text import BUILTIN_TEXT_ENCODERS, OFFLINE_PRETRAINED, TEXT_CONFIG_FIELDS

# transformers loader arguments and remote-code hooks: a file naming one is refused outright
LOADER_KEYS = frozenset({"trust_remote_code", "revision", "code_revision", "auto_map", "token", "use_auth_token",
                         "cache_dir", "local_files_only", "force_download", "proxies", "subfolder", "mirror",
                         "_commit_hash", "name_or_path", "_name_or_path", "attn_implementation"})
# how a training run's image encoder started: the user's choice (a local file), never a checkpoint's
INIT_KEYS = frozenset({"init", "init_checkpoint", "imgnet_pretrained", "imgnet_pretrained_checkpoint",
                       "freeze_backbone"})
# counts of modules or tokens; larger values are no model anyone trains and only cost time to build
MAX_COUNT = 1024
MAX_SIZE = 10_000_000  # any other integer (a width, a vocabulary size); the weights must match it anyway
COUNT_KEYS = frozenset({"depths", "num_heads", "num_group_tokens", "num_output_groups", "proj_num_layers",
                        "cross_layers", "num_hidden_layers", "num_attention_heads", "n_layers", "n_heads",
                        "stem_extra_convs"})


def model_config_from_file(stored: Any, source: str) -> dict:
    """The ``model`` section of an ovseg checkpoint's stored config, checked; everything else is dropped."""
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{source}: the stored config is not a mapping")
    model = stored.get("model")
    if not isinstance(model, Mapping):
        raise CheckpointError(f"{source}: the stored config has no 'model' section")
    model = dict(model)
    if "img_encoder" in model:
        model["img_encoder"] = architecture_only(model["img_encoder"])
    refuse_interpolations(model, source, "model")
    text = model.get("text_encoder") or {}
    check_text_encoder(text, source, "model.text_encoder")
    if text.get("name") not in OFFLINE_PRETRAINED:
        model["text_encoder"] = {**text, "pretrained": False}  # the file's weights; never fetched from a hub
    check_sizes(model, source, "model")
    prompt = model.get("entity_prompt")
    if prompt is not None and (not isinstance(prompt, str) or prompt.count("{") != 1 or "{}" not in prompt
                               or prompt.count("}") != 1):
        raise CheckpointError(f"{source}: refused 'model.entity_prompt': expected text with one '{{}}' and no "
                              "other braces")
    return model


def architecture_only(img: Any) -> Any:
    """The image encoder's section without how training once started (``init``, its file, freezing): a file
    never makes ovseg read another file. What ``init: clip`` adds to the architecture (CLIP's ``proj``) stays."""
    if not isinstance(img, Mapping):
        return img
    clip = "clip" in (img.get("init"), img.get("imgnet_pretrained"))
    kept = {k: v for k, v in img.items() if k not in INIT_KEYS}
    return {**kept, "init": "clip"} if clip else kept


def parse_stored_config(text: str | None, source: str) -> Any:
    """The JSON config of a safetensors header (``{}`` when absent)."""
    if text is None:
        return {}
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{source}: the config in its header is not valid JSON ({e})") from e


def refuse_interpolations(value: Any, source: str, key: str) -> None:
    """A ``${…}`` anywhere (dict values and keys, list items) is refused: a file's config is never resolved."""
    for path, item in _leaves(value, key):
        if isinstance(item, str) and "${" in item:
            raise CheckpointError(f"{source}: refused '{path}': it holds an interpolation (${{…}}); a checkpoint's "
                                  "config is data and is never resolved")


def check_text_encoder(text: Mapping, source: str, key: str) -> None:
    """Built-in architecture only; transformers overrides as typed plain fields."""
    if not isinstance(text, Mapping):
        raise CheckpointError(f"{source}: '{key}' is not a mapping")
    for field in ("name", "tokenizer"):
        name = text.get(field)
        if field == "tokenizer" and name is None:
            continue
        if name not in BUILTIN_TEXT_ENCODERS:
            raise CheckpointError(
                f"{source}: refused '{key}.{field}': a checkpoint may only name a built-in text encoder "
                f"({', '.join(sorted(BUILTIN_TEXT_ENCODERS))}), not a folder, hub id or URL; to use another, "
                f"name it yourself: --opts {key}.{field}=NAME")
    overrides = text.get("hf_overrides") or {}
    if not isinstance(overrides, Mapping):
        raise CheckpointError(f"{source}: '{key}.hf_overrides' is not a mapping")
    check_hf_overrides(overrides, source, f"{key}.hf_overrides")


def check_hf_overrides(overrides: Mapping, source: str, key: str) -> None:
    """Each override a known transformers config field with a value of its type (``TEXT_CONFIG_FIELDS``)."""
    for name, value in overrides.items():
        if name in LOADER_KEYS:
            raise CheckpointError(f"{source}: refused '{key}.{name}': a loader argument, which a file may not set")
        expected = TEXT_CONFIG_FIELDS.get(name)
        if expected is None:
            raise CheckpointError(f"{source}: refused '{key}.{name}': not a known text-encoder field "
                                  f"(known: {', '.join(sorted(TEXT_CONFIG_FIELDS))})")
        if isinstance(expected, tuple) and value not in expected:
            raise CheckpointError(f"{source}: refused '{key}.{name}': expected one of {', '.join(expected)}")
        if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)
                                         or (expected is int and not isinstance(value, int))):
            raise CheckpointError(f"{source}: refused '{key}.{name}': expected {expected.__name__}")


def check_sizes(model: Mapping, source: str, key: str) -> None:
    """Integers within bounds before anything is built: counts ≤ MAX_COUNT, other sizes ≤ MAX_SIZE, none < 0."""
    for path, value in _leaves(model, key):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        field = path.split(".")[-1].split("[")[0]
        bound = MAX_COUNT if field in COUNT_KEYS else MAX_SIZE
        if not -1 <= value <= bound:  # -1: "none" in a few transformers fields
            raise CheckpointError(f"{source}: refused '{path}': {value} is outside [0, {bound}]")


def check_shapes(model: torch.nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """The file's tensor shapes against a (meta) model's: a mismatch names the key and both shapes."""
    expected = model.state_dict()
    for key, shape in shapes.items():
        if key in expected and tuple(expected[key].shape) != tuple(shape):
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(shape)}, the model expects "
                                  f"{tuple(expected[key].shape)} (a checkpoint of another architecture, or a "
                                  "config that does not describe its weights?)")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield f"{path}.{k}", k
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value
