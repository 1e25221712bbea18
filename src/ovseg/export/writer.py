"""``export_model``: a model and its harness settings -> an export folder (ONNX graphs, ``.pt2`` programs,
``export.json``).

Each graph is captured once with ``torch.export`` (batch and window size dynamic: the position table's
bicubic resize is part of the graph, so one export serves every window size), saved as a ``.pt2`` and/or
translated to ONNX by ``torch.onnx.export`` (the dynamo exporter) from that same program. The ONNX graphs
are then run in onnxruntime on two window sizes and compared with PyTorch; an export that disagrees is
refused. Every file is written atomically, ``export.json`` last.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.export import Dim, ExportedProgram

from ..errors import OvsegError
from ..fileio import atomic_write
from ..inference.segmenter import check_seg_config
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from .graphs import IMAGE_INPUTS, TEXT_INPUTS, TEXT_OUTPUTS, PromptEncoder, WindowEncoder, image_output_names
from .manifest import IMAGE_ONNX, IMAGE_PT2, MANIFEST, TEXT_ONNX, TEXT_PT2, Manifest, write_manifest

FORMATS = ("onnx", "torch-export", "both")
PARITY_TOLERANCE = 1e-3  # max abs difference of normalised embeddings / probabilities; measured ~1e-6
INSTALL_HINT = "pip install 'ovseg[export]'"
# the exporters' own notes, kept off the user's screen during an export: onnxscript's optimizer logs every rewrite
# at INFO, torch.onnx warns that torchvision's operators are not registered (ovseg uses none)
QUIET_LOGGERS = {"torch.onnx": logging.ERROR, "onnxscript": logging.WARNING, "onnx_ir": logging.WARNING}
log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """The folder, the files written in it and the measured ONNX-vs-PyTorch max abs differences
    (``parity``: graph name -> figure; empty without onnxruntime or ONNX)."""

    folder: Path
    files: list[str]
    parity: dict[str, float]


@dataclass
class _Graph:
    """One graph to export: its captured program, example inputs, names and the parity-check inputs."""

    what: str
    module: torch.nn.Module  # the eager graph: the reference of the parity check
    program: ExportedProgram
    args: tuple
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: dict[int, str]  # dynamic axes of every input -> their ONNX names
    checks: list[tuple]
    pt2: str
    onnx: str


def export_model(
    model: OVSegmentor, seg_cfg: DictConfig, output: str | Path, crop_size: int | None = None, fmt: str = "onnx"
) -> ExportResult:
    """Export ``model`` (fp32) with the ``evaluate.seg`` harness ``seg_cfg`` into ``output``. ``crop_size``
    overrides the harness window (also the example size the graphs are captured at)."""
    if fmt not in FORMATS:
        raise OvsegError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
    if fmt != "torch-export":
        require_onnx()
    seg = _harness(model, seg_cfg, crop_size)
    with _quiet_exporters():
        return _export(model.eval(), seg, Path(output), fmt)


def _export(model: OVSegmentor, seg: DictConfig, folder: Path, fmt: str) -> ExportResult:
    """Capture, write, check; an earlier export's manifest goes first, so that a folder holding one is complete."""
    (folder / MANIFEST).unlink(missing_ok=True)
    per_patch = seg.scoring == "patches"
    graphs = _capture_graphs(model, int(seg.crop_size), per_patch)
    files, parity, opset = [], {}, None
    if fmt != "onnx":
        for graph in graphs:
            atomic_write(folder / graph.pt2, lambda tmp, g=graph: _save_program(g.program, tmp))
            files.append(graph.pt2)
    if fmt != "torch-export":
        programs = [_to_onnx(graph) for graph in graphs]
        for graph, program in zip(graphs, programs, strict=True):
            parity |= _verify(graph, program)
        for graph, program in zip(graphs, programs, strict=True):
            atomic_write(folder / graph.onnx, lambda tmp, p=program: p.save(tmp, external_data=False))
            files.append(graph.onnx)
        opset = next(o.version for o in programs[0].model_proto.opset_import if o.domain in ("", "ai.onnx"))
    write_manifest(folder, _manifest(model, seg, per_patch, files, parity, opset))
    return ExportResult(folder=folder, files=files + [MANIFEST], parity=parity)


@contextlib.contextmanager
def _quiet_exporters():
    """``QUIET_LOGGERS`` at their levels (and torch's pytree deprecation warning off) inside the block."""
    loggers = {logging.getLogger(name): level for name, level in QUIET_LOGGERS.items()}
    before = {logger: logger.level for logger in loggers}
    try:
        for logger, level in loggers.items():
            logger.setLevel(max(level, logger.getEffectiveLevel()))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


def _capture_graphs(model: OVSegmentor, crop: int, per_patch: bool) -> list[_Graph]:
    """Both graphs captured by ``torch.export``, batch and window size (or prompt length) dynamic."""
    windows, prompts = _example_windows(model, crop), _example_prompts(model)
    image_axes, text_axes = {0: "batch", 2: "height", 3: "width"}, {0: "batch", 1: "length"}
    image_module, text_module = WindowEncoder(model, per_patch).eval(), PromptEncoder(model).eval()
    image = _capture("image encoder", image_module, windows, {"images": _dynamic(image_axes)})
    text = _capture("text encoder", text_module, prompts, dict.fromkeys(TEXT_INPUTS, _dynamic(text_axes)))
    return [
        _Graph("image encoder", image_module, image, windows, IMAGE_INPUTS, image_output_names(per_patch), image_axes,
               [windows, (_other_window(model, crop),)], IMAGE_PT2, IMAGE_ONNX),
        _Graph("text encoder", text_module, text, prompts, TEXT_INPUTS, TEXT_OUTPUTS, text_axes, [prompts],
               TEXT_PT2, TEXT_ONNX),
    ]  # fmt: skip


def _dynamic(axes: dict[int, str]) -> dict[int, Dim]:
    return dict.fromkeys(axes, Dim.DYNAMIC)


def require_onnx() -> None:
    """OvsegError (one line) unless the ONNX exporter's packages are importable."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise OvsegError(
            f"ONNX export needs the packages onnx and onnxscript ({e.name} is missing): {INSTALL_HINT}"
        ) from e


def check_exportable(model: OVSegmentor, seg_cfg: DictConfig) -> None:
    """OvsegError (one line) for a model whose windows the exported graph cannot describe."""
    blocks = sum(layer.downsample is not None for layer in model.img_encoder.layers)
    if blocks != 1:
        raise OvsegError(
            f"cannot export this model's windows: its image encoder has {blocks} grouping blocks; the "
            "segmentation head reads one block's assignment over the patch grid (depths [d, d'])"
        )
    check_seg_config(model, seg_cfg)


def _harness(model: OVSegmentor, seg_cfg: DictConfig, crop_size: int | None) -> DictConfig:
    """The harness settings of the export: ``crop_size`` applied, fp32 (the graphs' precision)."""
    seg = OmegaConf.merge(seg_cfg, {"precision": "fp32"})
    if crop_size is not None:
        patch = model.cfg.img_encoder.patch_size
        if crop_size < 2 * patch:
            raise OvsegError(f"--crop-size {crop_size}: at least two patches ({2 * patch} pixels) per window")
        seg.crop_size = crop_size
    if seg_cfg.precision not in ("fp32", "auto"):
        log.info("the export computes in fp32 (evaluate.seg.precision=%s applies to PyTorch only)", seg_cfg.precision)
    check_exportable(model, seg)
    return seg


def _example_windows(model: OVSegmentor, crop: int) -> tuple[torch.Tensor]:
    """Two crop×crop windows: a batch of 2 keeps the batch dimension symbolic (1 would be specialised)."""
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    return (torch.randn(2, 3, crop, crop, generator=generator).to(device),)


def _other_window(model: OVSegmentor, crop: int) -> torch.Tensor:
    """A window of another shape (not square, not a multiple of the patch) for the parity check."""
    patch = model.cfg.img_encoder.patch_size
    height = max(2 * patch, crop // 2) + patch // 2
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, height, crop, generator=generator).to(next(model.parameters()).device)


def _example_prompts(model: OVSegmentor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of different lengths, tokenised as the runtime will (padding in the shorter one)."""
    te = model.cfg.text_encoder
    tok = build_tokenizer(te.name, te.tokenizer)(
        ["a photo of a cat.", "a photo of a large potted plant."], padding=True, return_tensors="pt"
    )
    device = next(model.parameters()).device
    return tok["input_ids"].to(device), tok["attention_mask"].to(device)


def _capture(what: str, module: torch.nn.Module, args: tuple, dynamic_shapes: dict) -> ExportedProgram:
    """``torch.export`` of one graph; an operation it cannot capture is one OvsegError line."""
    try:
        with torch.no_grad():
            return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:  # torch.export raises many types; the first line says what failed
        raise OvsegError(
            f"cannot export this model's {what}: torch.export failed ({type(e).__name__}: {first_line(e)})"
        ) from e


def _save_program(program: ExportedProgram, path: str) -> None:
    """``torch.export.save`` through an open file: it warns on a path not ending in ``.pt2`` (the temporary)."""
    with open(path, "wb") as f:
        torch.export.save(program, f)


def _to_onnx(graph: _Graph):
    """The ONNX program of a captured graph, its inputs, outputs and dynamic axes named."""
    try:
        program = torch.onnx.export(graph.program, graph.args, dynamo=True, input_names=list(graph.inputs),
                                    output_names=list(graph.outputs), verbose=False)  # fmt: skip
    except Exception as e:  # the translation raises many types; the first line says what failed
        raise OvsegError(
            f"cannot export this model's {graph.what} to ONNX ({type(e).__name__}: {first_line(e)})"
        ) from e
    program.rename_axes({value.shape[axis]: name for value in program.model.graph.inputs
                         for axis, name in graph.axes.items()})  # fmt: skip
    return program


def _verify(graph: _Graph, onnx_program) -> dict[str, float]:
    """Max abs difference of the ONNX graph (onnxruntime) and PyTorch over ``graph.checks``; OvsegError above
    ``PARITY_TOLERANCE``. Skipped (empty) when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.info("onnxruntime is not installed: the exported %s was not checked against PyTorch", graph.what)
        return {}
    session = ort.InferenceSession(onnx_program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for args in graph.checks:
        with torch.no_grad():
            expected = graph.module(*args)
        got = session.run(None, {name: a.cpu().numpy() for name, a in zip(graph.inputs, args, strict=True)})
        worst = max([worst] + [float((torch.from_numpy(g) - e.cpu()).abs().max())
                               for g, e in zip(got, expected, strict=True)])  # fmt: skip
    if not worst <= PARITY_TOLERANCE:
        raise OvsegError(f"cannot export this model's {graph.what}: onnxruntime disagrees with PyTorch by "
                         f"{worst:.2e} (tolerance {PARITY_TOLERANCE:g})")  # fmt: skip
    return {graph.what.replace(" ", "_"): worst}


def _manifest(
    model: OVSegmentor, seg: DictConfig, per_patch: bool, files: list[str], parity: dict[str, float], opset: int | None
) -> Manifest:
    te = model.cfg.text_encoder
    background = getattr(model, "background_embedding", None)
    extra = {
        "ovseg_version": metadata.version("ovseg"),
        "torch_version": torch.__version__,
        "onnx_opset": opset,
        "files": files,
        "parity_max_abs_diff": parity,
        "image_encoder": _image_io(model, per_patch),
        "text_encoder": _text_io(model),
    }
    return Manifest(
        seg=seg,
        patch_size=int(model.cfg.img_encoder.patch_size),
        text_encoder=te.name,
        tokenizer=te.tokenizer,
        max_length=int(te.max_length),
        logit_scale=float(model.scale().detach()),
        background_embedding=None if background is None else background.detach().float().cpu().tolist(),
        per_patch=per_patch,
        extra=extra,
    )


def _image_io(model: OVSegmentor, per_patch: bool) -> dict:
    """The image graph's inputs and outputs as [shape, dtype] (h = height // patch, w = width // patch for
    a patch stem)."""
    groups, dim = model.num_groups, model.cfg.output_dim
    outputs = {
        "group_emb": [["batch", groups, dim], "float32"],
        "image_emb": [["batch", dim], "float32"],
        "soft_assign": [["batch", groups, "h", "w"], "float32"],
    }
    if per_patch:
        outputs["patch_emb"] = [["batch", "h*w", dim], "float32"]
    return {
        "inputs": {"images": [["batch", 3, "height", "width"], "float32"]},
        "outputs": outputs,
        "window_size": "dynamic",
    }


def _text_io(model: OVSegmentor) -> dict:
    dim = model.cfg.output_dim
    return {
        "inputs": {name: [["batch", "length"], "int64"] for name in TEXT_INPUTS},
        "outputs": {name: [["batch", dim], "float32"] for name in TEXT_OUTPUTS},
    }


def first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"
