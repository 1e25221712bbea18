"""Typed configuration: OmegaConf YAML with ``_base_`` inheritance and ``key=value`` overrides.

Every file is merged onto the schema below, so an unknown key or a value of the wrong type is an error
that names the key and the file, not a silent no-op. ``_base_`` is a path (or list of paths) relative to
the file that names it; bases are merged first, in order, then the file itself, then ``--opts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

# Every enumerated setting, declared once: a bad value fails at config load with the allowed list, and code
# that needs the list reads it from here (``typing.get_args``).
Stem = Literal["patch", "conv"]  # patch: one strided conv (GroupViT, official weights); conv: a small conv stack
SegmentValues = Literal["tokens", "stem"]  # what a segment averages: its patches' tokens (GroupViT) | stem features
Pooling = Literal["cls", "mean"]
AttentionKernel = Literal["sdpa", "eager"]
MultiLabelPooling = Literal["mean", "max"]  # mean: the pooled embedding (GroupViT) | max: each prompt's best segment
Templates = Literal["simple", "subset", "full", "identity"]  # 1, 7 or 80 prompt templates, or the bare name
WindowMode = Literal["slide", "whole"]
Background = Literal["threshold", "learned"]  # threshold (the original) | learned (needs model.learned_background)
InferencePrecision = Literal["auto", "fp32", "bf16-matmul", "bf16"]
Refinement = Literal["none", "pamr", "pamr-local"]  # none (the original) | pamr: TCL's PAMR | pamr-local: ovseg's
Scoring = Literal["groups", "patches"]  # groups (the original) | patches: every patch as a one-patch segment
DataType = Literal["scenes", "webdataset", "csv", "folder"]  # scenes: embedded, no files; else caption corpora
Augment = Literal["paper", "none"]  # paper (spec §2.5; stage 2: crop + flip) | none (centre square; tests)
AugmentDevice = Literal["auto", "cpu", "cuda"]  # where flip, RandAugment, erasing, normalisation run
TrainingPrecision = Literal["auto", "fp32", "bf16", "bf16-stem"]
DistBackend = Literal["auto", "nccl", "gloo"]
# where the image encoder's backbone (stem, blocks before and after grouping, final norm) starts from (spec §1.2)
# ovseg-ssl: the file ``ovseg pretrain-ssl`` writes (stem, position table, blocks before the grouping)
BackboneInit = Literal["none", "dino", "dino_vits16", "dino_vitb8", "dino_vits8", "imagenet", "clip", "ovseg-ssl"]
# dino: multi-crop, EMA teacher | ibot: dino + masked patch tokens | simmim: masked pixel prediction, no teacher
SslMethod = Literal["dino", "ibot", "simmim"]


@dataclass
class ImageEncoderConfig:
    type: Literal["GroupViT"] = "GroupViT"
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    embed_factors: list[float] = field(default_factory=lambda: [1.0, 1.0])
    depths: list[int] = field(default_factory=lambda: [6, 6])
    num_heads: list[int] = field(default_factory=lambda: [8, 8])
    num_group_tokens: list[int] = field(default_factory=lambda: [64, 0])
    num_output_groups: list[int] = field(default_factory=lambda: [8])
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = False
    stem: Stem = "patch"
    center_assign_keys: bool = False  # assignment logits on keys centred per image (ovseg; off in GroupViT)
    group_token_residual: bool = True  # segment = its patches + its group token (GroupViT); false: patches only
    stem_extra_convs: int = 0  # conv stem only: stride-1 3x3 convolutions at the patch grid
    segment_values: SegmentValues = "tokens"
    hard_assignment: bool = True
    gumbel_tau: float = 1.0
    fixed: bool = False
    init: BackboneInit = "none"  # pretrained backbone read from init_checkpoint when a model is built to train
    init_checkpoint: str | None = None  # a .pth / .safetensors file or a Hugging Face ViT folder
    imgnet_pretrained: str | None = None  # the original's name for init (dino, dinob8, dinos16, dinos8, imgnet, clip)
    imgnet_pretrained_checkpoint: str | None = None  # the original's name for init_checkpoint
    freeze_backbone: bool = False  # keep the initialised backbone's weights fixed (the original's switch)


@dataclass
class TextEncoderConfig:
    name: str = "bert-base-uncased"  # builtin (bert-base-uncased, roberta-base, minilm-l6), folder or hub id
    pretrained: bool = False  # load the weights of `name` (False: built from its config; weights from a ckpt)
    hf_overrides: dict[str, Any] = field(default_factory=dict)  # transformers config fields to change
    attn_implementation: AttentionKernel = "sdpa"
    tokenizer: str | None = None  # default: the tokenizer of `name`
    max_length: int = 77
    pooling: Pooling = "cls"
    center_features: bool = False  # subtract the training captions' mean pooled feature (frozen encoders)
    fixed: bool = False


@dataclass
class EntityDecoderConfig:
    cross_layers: int = 1
    num_heads: int = 8
    mask_padding: bool = False  # the original lets padding tokens take part (False reproduces it)


@dataclass
class ModelConfig:
    type: Literal["OVSegmentor"] = "OVSegmentor"
    img_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    output_dim: int = 256
    proj_num_layers: int = 2
    proj_inner_dim: int = 4096
    contrast_temperature: float = 0.07
    logit_scale_max: float = 100.0
    use_entityloss: bool = False
    use_maskloss: bool = False
    entity_decoder: EntityDecoderConfig = field(default_factory=EntityDecoderConfig)
    entity_weight: float = 1.0
    maskloss_weight: float = 0.1
    cross_threshold: float = 0.6
    group_ratio: float = 0.5
    momentum: float = 0.99
    # ovseg additions (0/False = the original method): group-level supervision from the caption's entities
    multi_label_weight: float = 0.0  # GroupViT's multi-label prompt loss on the pooled embedding
    multi_label_pooling: MultiLabelPooling = "mean"
    patch_label_weight: float = 0.0  # the prompt loss with each prompt scored by its best patch (scoring: patches)
    group_entity_weight: float = 0.0  # segment-level MIL loss (needs learned_background)
    learned_background: bool = False  # a learned "background" embedding, used as a class at inference
    entity_prompt: str = "a photo of a {}."


@dataclass
class SegConfig:
    """Zero-shot segmentation harness (spec §4.1); defaults are PASCAL VOC's."""

    dataset: str | None = "voc"
    data_root: str | None = None  # benchmark folder; None: $OVSEG_DATA/<default> or ./data/<default>
    bg_thresh: float | None = 0.95  # None: no background class (ADE20K)
    template: Templates = "simple"
    top_k: int = 5
    mode: WindowMode = "slide"
    crop_size: int = 448
    stride: int = 224
    short_side: int = 448
    max_long_side: int = 2048
    batch_crops: int = 8
    background: Background = "threshold"
    precision: InferencePrecision = "auto"  # auto: fastest, fp32's labels | fp32: the reference | bf16-matmul, bf16
    refine: Refinement = "none"
    refine_iterations: int = 10
    refine_temperature: float | None = None  # t in exp(-|colour difference| / (t x std)); None: pamr 0.1, -local 0.3
    refine_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 24])  # neighbours' 3x3 grids
    scoring: Scoring = "groups"
    flip: bool = False  # also segment each window mirrored left-right and average (flip test-time augmentation)
    rotate: bool = False  # also segment each window turned by 90, 180 and 270 degrees (with flip: 8 views)


@dataclass
class ClsConfig:
    """Zero-shot classification (spec §2.6): top-1 / top-5 of class-name prompts, ImageNet-style images."""

    data_root: str | None = None  # a folder of class sub-folders or a CSV (image,label); None: not run
    classes: str = "imagenet"  # "imagenet" (the 1000 names shipped) or a file of names (one per line, or JSON)
    template: Templates = "subset"
    resize: int = 256  # shorter side, bilinear, then a centre crop of crop_size (the original's, spec §3)
    crop_size: int = 224
    batch_size: int = 64
    max_images: int | None = None  # score N images spread evenly over the list (None: all)


@dataclass
class EvaluateConfig:
    seg: SegConfig = field(default_factory=SegConfig)
    cls: ClsConfig = field(default_factory=ClsConfig)
    val_every_steps: int = 0  # periodic zero-shot mIoU on the validation split (0: only at the end)
    val_every_epochs: int = 0  # also validate after every N epochs (the original: 1); 0: off
    val_max_images: int | None = None  # validate segmentation on the first N images of val_dataset (None: all)
    val_bg_thresholds: list[float] = field(default_factory=lambda: [0.95])  # chosen on validation
    # what validation reads: "scenes" | a benchmark of ovseg.evaluation's registry ("voc", "ade20k" …, read
    # from seg.data_root with the seg harness) | None: the scenes' val split when data.type is scenes, else none
    val_dataset: str | None = None


@dataclass
class ScenesConfig:
    """The embedded captioned-scene dataset (``data.type: scenes``)."""

    train_size: int = 4096  # captions in the training pool; layouts are re-drawn every epoch
    val_size: int = 256
    test_size: int = 512
    seed: int = 0
    colour_word_prob: float = 0.3
    synonym_prob: float = 0.3
    relation_prob: float = 0.4
    clutter: float = 1.0  # background texture and clutter strength (0: plain backgrounds)
    background_pool: int = 2048  # training backgrounds drawn from this many (x8 flips/turns); 0: all fresh


@dataclass
class DataConfig:
    type: DataType = "scenes"  # caption corpora: docs/data.md
    batch_size: int = 256  # per process
    num_workers: int = 0
    image_size: int = 224
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    answer_templates: Templates = "full"  # templates whose prefix starts the entity answer prompt
    cross_entity_template: str = "A photo of {}"
    entity_vocabulary: str | None = None  # JSON file; default: the paper's 100 words / 73 entities
    legacy_entity_strip: bool = False  # reproduce the original's strip("'s") matching bug
    shuffle_captions: bool = False  # control experiment: pair every image with another image's caption
    # caption corpora (data.type webdataset | csv | folder; docs/data.md). `ovseg prepare` output is the fast path
    shards: str | None = None  # webdataset: a prepared folder, a folder of .tar, a .tar, or brace patterns joined by ::
    meta_file: str | None = None  # csv: metafile with columns image_id, caption (+ optional pairindex, pairentity)
    image_root: str | None = None  # csv: folder image_id is relative to (default: the metafile's); folder: the images
    augment: Augment = "paper"  # not for scenes
    augment_device: AugmentDevice = "auto"  # auto: the training device; cpu: in the loader workers (per sample)
    shuffle_buffer: int = 2000  # streaming: encoded samples shuffled locally after each epoch's shard shuffle


@dataclass
class TrainConfig:
    stage: int = 1
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    warmup_epochs: float = 2.0
    base_lr: float = 6.4e-4
    warmup_lr: float = 1.6e-5
    min_lr: float = 1.6e-4
    lr_reference_batch: int = 4096  # effective lr = lr x global batch / this (linear scaling rule)
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad: float = 5.0
    accumulation_steps: int = 1
    amp: TrainingPrecision = "auto"  # auto: bf16 on CUDA, fp32 on CPU; bf16-stem: only the image stem in bf16
    soft_assignment_fraction: float = 0.0  # train with soft grouping for this first fraction of steps
    text_cache_bf16: bool = False  # fill the frozen-text feature cache under bf16 autocast
    text_cache_file: str | None = None  # keep frozen-text features on disk between runs
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda (one GPU per process: cuda:LOCAL_RANK under torchrun/srun)
    dist_backend: DistBackend = "auto"  # auto: nccl on CUDA, gloo on CPU
    dist_timeout_s: int = 600  # rendezvous and collective timeout: a missing rank fails after this, no hang
    compile: bool = False  # torch.compile the image and text encoders, heads, entity decoder (BENCHMARKS.md: +5 %)
    text_buckets: int = 0  # length buckets per text pass (same features to rounding); 0: one pass padded to the longest


@dataclass
class CheckpointConfig:
    auto_resume: bool = True
    resume: str | None = None
    stage1_checkpoint: str | None = None
    every_steps: int = 1000
    keep_last: int = 2


@dataclass
class SslConfig:
    """``ovseg pretrain-ssl``: label-free pretraining of the image encoder's stem, position table and blocks
    before the grouping on a scene stream disjoint from every split (``ovseg.engine.ssl``)."""

    method: SslMethod = "dino"
    steps: int = 600
    batch_size: int = 64
    global_size: int = 64  # two global crops of this many pixels per image
    local_crops: int = 4  # small crops, seen by the student only
    local_size: int = 32
    global_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # share of the image a crop covers
    local_scale: list[float] = field(default_factory=lambda: [0.1, 0.35])
    head_hidden: int = 512
    head_bottleneck: int = 128
    out_dim: int = 1024  # prototypes of the projection head
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    momentum: float = 0.99  # the teacher's EMA momentum at the start; a cosine brings it to 1
    base_lr: float = 1.0e-3
    min_lr: float = 1.0e-5
    warmup_steps: int = 30
    weight_decay: float = 0.04
    clip_grad: float = 3.0
    mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])  # ibot: patches masked per masked view
    mask_prob: float = 0.5  # ibot: share of global views that are masked
    patch_loss_weight: float = 1.0  # ibot: the masked-patch loss against the image-level one
    mask_ratio_mim: float = 0.55  # simmim: share of each image's mask units that are masked
    mask_unit_mim: int = 2  # simmim: a mask unit is this many patches a side
    num_workers: int = 0  # processes rendering scenes beside the training one
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 2


@dataclass
class OvsegConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ssl: SslConfig = field(default_factory=SslConfig)
    seed: int = 0
    output: str = "output"


def schema() -> DictConfig:
    return OmegaConf.structured(OvsegConfig)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """The file merged onto its ``_base_`` chain (no schema yet)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # yaml parse errors come in several types
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    bases = raw.pop("_base_", None)
    bases = [] if bases is None else [bases] if isinstance(bases, str) else list(bases)
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / base, seen + (path.resolve(),)))
    return OmegaConf.merge(merged, raw)


def merge_checked(base: DictConfig, update: Any, where: str) -> DictConfig:
    """Merge ``update`` onto a schema-typed ``base``; unknown keys and bad types raise ConfigError."""
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{where}: bad key '{key}': {msg}") from e


def load_config(path: str | Path | None = None, opts: list[str] | None = None) -> DictConfig:
    """Schema defaults ← YAML file (with its ``_base_`` chain) ← ``opts`` (``a.b=value`` strings)."""
    cfg = schema()
    if path is not None:
        cfg = merge_checked(cfg, _read_yaml(Path(path)), str(path))
    return apply_opts(cfg, opts)


def apply_opts(cfg: DictConfig, opts: list[str] | None) -> DictConfig:
    for opt in opts or []:
        if "=" not in opt:
            raise ConfigError(f"--opts: expected key=value, got '{opt}'")
    if opts:
        cfg = merge_checked(cfg, OmegaConf.from_dotlist(list(opts)), "--opts")
    return cfg


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
