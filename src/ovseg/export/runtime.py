"""``OnnxSegmenter``: ovseg's harness with both encoders running in onnxruntime.

    seg = OnnxSegmenter("exported/")                  # written by `ovseg export`
    pred = seg.predict("photo.jpg", ["cat", "dog"])   # the same Prediction as Segmenter.predict

Only the encoders change. Preprocessing, windows, test-time views, group maps, prompt averaging, the
class decision, refinement and label maps are ``ovseg.inference``'s own functions, called with
``OnnxEncoders`` in place of the model, so both backends share one code path after the encoders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..errors import CheckpointError, OvsegError
from ..inference.class_names import display_name, embed_class_names
from ..inference.decision import class_logits
from ..inference.lru import LruCache
from ..inference.segmenter import Prediction
from ..inference.slide import ImageEncoding, encode_images, labels_and_scores
from ..inference.transforms import ImageLike, Preprocess, read_rgb
from ..model.grouping import Assignment
from ..model.ovsegmentor import ImageOutput, TextOutput
from ..model.text import build_tokenizer
from .graphs import IMAGE_INPUTS, TEXT_INPUTS, TEXT_OUTPUTS, image_output_names
from .manifest import IMAGE_ONNX, TEXT_ONNX, Manifest, read_manifest
from .writer import INSTALL_HINT, first_line

MAX_ONNX_BYTES = 2**31  # one protobuf; ovseg exports keep their weights inside the file
_DEFAULT = object()


class OnnxEncoders:
    """The two ONNX graphs behind the interface ``ovseg.inference`` calls on a model: ``encode_image``,
    ``encode_text``, ``scale()``, ``background_embedding``, ``cfg.text_encoder.max_length`` and the device
    of ``parameters()`` (the CPU: onnxruntime's outputs come back as CPU tensors)."""

    def __init__(self, folder: Path, manifest: Manifest, providers: Sequence[str] | None = None):
        providers = list(providers or ["CPUExecutionProvider"])
        self.image = load_session(folder / IMAGE_ONNX, IMAGE_INPUTS, image_output_names(manifest.per_patch), providers)
        self.text = load_session(folder / TEXT_ONNX, TEXT_INPUTS, TEXT_OUTPUTS, providers)
        self.per_patch = manifest.per_patch
        self.cfg = OmegaConf.create({"text_encoder": {"max_length": manifest.max_length}})
        self._scale = torch.tensor(manifest.logit_scale, dtype=torch.float32)
        if manifest.background_embedding is not None:
            self.background_embedding = torch.tensor(manifest.background_embedding, dtype=torch.float32)

    def parameters(self) -> Iterator[torch.Tensor]:
        yield torch.empty(0)  # where inputs go: the CPU

    def scale(self) -> torch.Tensor:
        return self._scale

    def encode_image(self, images: torch.Tensor, per_patch: bool = False) -> ImageOutput:
        """images (B, 3, H, W) float32 -> what the harness reads of ``OVSegmentor.encode_image`` (the
        embeddings before projection and the assignment's hard map, queries and keys are not exported)."""
        if per_patch and not self.per_patch:
            raise OvsegError(
                "evaluate.seg.scoring=patches: this export has no per-patch output; export again with that setting"
            )
        out = self.image.run(None, {IMAGE_INPUTS[0]: images.detach().float().contiguous().numpy()})
        group_emb, image_emb, soft = (torch.from_numpy(o) for o in out[:3])
        batch, groups, height, width = soft.shape
        assignment = Assignment(soft=soft.reshape(batch, 1, groups, height * width), hard=None, q=None, k=None)
        return ImageOutput(
            image_x=image_emb,
            image_feat=group_emb,
            image_x_before_proj=None,
            image_feat_before_proj=None,
            assignments=[assignment],
            grid=(height, width),
            patch_feat=torch.from_numpy(out[3]) if per_patch else None,
        )

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        """(B, L) token ids and mask -> ``text_x``, each prompt's projected (unnormalised) embedding."""
        feeds = {TEXT_INPUTS[0]: input_ids.long().numpy(), TEXT_INPUTS[1]: attention_mask.long().numpy()}
        prompt_emb = self.text.run([TEXT_OUTPUTS[0]], feeds)[0]
        return TextOutput(text_x=torch.from_numpy(prompt_emb), text_x_before_proj=None, tokens=None)


class OnnxSegmenter:
    """Zero-shot segmentation from an export folder, without PyTorch weights. ``cfg``: the harness settings
    the export was written with (``evaluate.seg``; change them between calls as on ``Segmenter``, except
    ``scoring: patches`` on an export without the per-patch output); ``tokenizer``: your own, instead of the
    built-in one the export names; ``providers``: onnxruntime execution providers (default: the CPU)."""

    def __init__(
        self, export_dir: str | Path, tokenizer=None, providers: Sequence[str] | None = None, text_cache_size: int = 32
    ):
        require_runtime()
        folder = Path(export_dir)
        self.manifest = read_manifest(folder, trust_tokenizer=tokenizer is not None)
        self.cfg = self.manifest.seg
        self.encoders = OnnxEncoders(folder, self.manifest, providers)
        self.tokenizer = tokenizer or build_tokenizer(self.manifest.text_encoder, self.manifest.tokenizer)
        self.text_cache: LruCache = LruCache(text_cache_size)  # (vocabulary, templates) -> (N, D) embeddings

    @property
    def preprocess(self) -> Preprocess:
        """image -> the (1, 3, h, w) float32 normalised tensor that is cut into windows."""
        return Preprocess(int(self.cfg.short_side), int(self.cfg.max_long_side), self.manifest.patch_size)

    def encode(self, image: ImageLike) -> tuple[ImageEncoding, tuple[int, int]]:
        """(window encodings at the processing scale, the image's own (H, W))."""
        rgb = read_rgb(image)
        c = self.cfg
        enc = encode_images(
            self.encoders,
            [self.preprocess(rgb)],
            c.crop_size,
            c.stride,
            c.mode,
            c.batch_crops,
            c.scoring == "patches",
            bool(c.flip),
            bool(c.rotate),
        )[0]
        return enc, rgb.shape[:2]

    def class_embeddings(self, class_names: list[str], templates: str | None = None) -> torch.Tensor:
        """(N, D) L2-normalised class embeddings (templates and synonyms averaged), cached per vocabulary."""
        key = (tuple(class_names), templates or self.cfg.template)
        if key not in self.text_cache:
            self.text_cache[key] = embed_class_names(self.encoders, self.tokenizer, list(class_names), key[1])
        return self.text_cache[key]

    @torch.no_grad()
    def predict(
        self,
        image: ImageLike,
        class_names: list[str],
        *,
        bg_thresh: float | None | object = _DEFAULT,
        templates: str | None = None,
        top_k: int | None = None,
    ) -> Prediction:
        """Segment ``image`` into ``class_names`` (synonyms as ``"a|b"``), as ``Segmenter.predict`` does;
        ``bg_thresh=None`` disables the background class; by default the export's threshold is used."""
        if self.cfg.background == "learned" and not hasattr(self.encoders, "background_embedding"):
            raise OvsegError("evaluate.seg.background=learned: this export has no learned background embedding")
        enc, size = self.encode(image)
        text = self.class_embeddings(class_names, templates)
        thresh = self.cfg.bg_thresh if bg_thresh is _DEFAULT else bg_thresh
        logits, with_background = class_logits(self.encoders, self.cfg, enc, text, thresh, top_k)
        labels, score = labels_and_scores(logits, size)
        names = (["background"] if with_background else []) + [display_name(n) for n in class_names]
        return Prediction(
            labels=labels, scores=score, class_names=names, logits=logits, group_maps=enc.group_maps, boxes=enc.boxes
        )


def require_runtime() -> None:
    """OvsegError (one line) unless onnx and onnxruntime are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise OvsegError(
            f"the ONNX runtime path needs onnx and onnxruntime ({e.name} is missing): {INSTALL_HINT}"
        ) from e


def load_session(path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...], providers: list[str]):
    """An onnxruntime session of the ONNX file ``path``, read once: refused (CheckpointError, one line) when
    missing, too large, not ONNX, pointing at external data files (paths chosen by the file), or with other
    inputs or outputs than ovseg's graph."""
    import onnx
    import onnxruntime as ort

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (an export folder written by 'ovseg export' holds it)")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise CheckpointError(f"{path}: over {MAX_ONNX_BYTES} bytes; ovseg writes ONNX files without external data")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf decode errors come in several types
        raise CheckpointError(f"{path}: not an ONNX model ({type(e).__name__})") from e
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto)):
        raise CheckpointError(f"{path}: refers to external data files; ovseg reads self-contained ONNX files only")
    try:
        session = ort.InferenceSession(data, providers=providers)
    except Exception as e:  # onnxruntime raises its own types for invalid graphs
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from e
    found = (tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs()))
    if found != (inputs, outputs):
        raise CheckpointError(
            f"{path}: inputs {list(found[0])} and outputs {list(found[1])}; expected {list(inputs)} and {list(outputs)}"
        )
    return session


def _all_tensors(model) -> Iterator:
    """Every tensor stored in an ONNX model: initializers, and constants in nodes, subgraphs and functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph) -> Iterator:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for graph in attr.graphs:
                yield from _graph_tensors(graph)
