"""Datasets and loaders from the ``data`` config section."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from ..errors import ConfigError
from .collate import CaptionCollator
from .entities import EntityExtractor, EntityVocabulary
from .pairs import PairedDataset, PairIndex
from .scenes.dataset import CaptionedScenes, entity_vocabulary

if TYPE_CHECKING:
    from .device_augment import DeviceAugment
    from .streaming import StreamingCaptions

CORPUS_TYPES = ("webdataset", "csv", "folder")


class ShuffledCaptions(torch.utils.data.Dataset):
    """Control experiment: every image gets the caption of another (fixed random permutation)."""

    def __init__(self, base, seed: int = 0):
        self.base = base
        self.perm = torch.randperm(len(base), generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def entities_of(self, index: int) -> list[str]:
        return self.base.entities_of(self.perm[index])

    def captions(self) -> list[str]:
        return self.base.captions()

    def partner_image(self, index: int) -> torch.Tensor:
        return self.base.partner_image(index)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        other = self.base.scenes[self.perm[index]]
        item["caption"], item["entities"] = other.caption, other.entities
        return item


def scene_split(cfg: DictConfig, split: str) -> CaptionedScenes:
    s = cfg.data.scenes
    size = {"train": s.train_size, "val": s.val_size, "test": s.test_size}[split]
    return CaptionedScenes(split, size=size, image_size=cfg.data.image_size, seed=s.seed,
                           colour_word_prob=s.colour_word_prob, synonym_prob=s.synonym_prob,
                           relation_prob=s.relation_prob, clutter=s.clutter, background_pool=s.background_pool)


def resolve_augment_device(setting: str, training_device: torch.device) -> torch.device | None:
    """Where ``data.augment_device`` runs the augmentation after the crop: None for ``cpu`` (per sample, in
    the loader workers), else the device of the batched path. ``auto``: the GPU when training on one, else
    the workers (batched on the CPU it would run in the main process, 2.85 ms/sample against the workers'
    parallel per-sample path). ``cuda`` without a GPU is a ConfigError."""
    if setting == "cpu":
        return None
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("data.augment_device: 'cuda' needs a CUDA GPU, and this machine has none "
                              "(torch.cuda.is_available() is False); use auto or cpu")
        return training_device if training_device.type == "cuda" else torch.device("cuda")
    if setting == "auto":
        return training_device if training_device.type == "cuda" else None
    raise ConfigError(f"data.augment_device: expected auto, cpu or cuda, got '{setting}'")


def build_device_augment(cfg: DictConfig, training_device: torch.device, rank: int = 0) -> DeviceAugment | None:
    """The batched augmentation ``data.augment_device`` asks for (checked for every data type, so a bad
    setting fails before any data is read); None where the workers augment per sample, and for the
    scenes, which bring their own augmentation."""
    device = resolve_augment_device(cfg.data.augment_device, training_device)
    if device is None or cfg.data.type not in CORPUS_TYPES:
        return None
    from .device_augment import DeviceAugment

    stage = 2 if cfg.train.stage == 2 else 1
    return DeviceAugment(cfg.data.augment, stage, device, seed=cfg.seed, rank=rank)


def build_train_dataset(cfg: DictConfig, deferred: bool = False):
    """The training dataset; stage 2 (``model.use_maskloss``) adds a cross-image partner per sample.

    ``scenes``: a map-style dataset. ``webdataset``, ``csv``, ``folder``: a ``StreamingCaptions`` iterable
    dataset that splits each epoch across ranks and DataLoader workers itself (see its docstring); with
    ``deferred`` its images are the uint8 crops that ``build_device_augment``'s augmentation completes."""
    if cfg.data.type in CORPUS_TYPES:
        return corpus_dataset(cfg, deferred=deferred)
    if cfg.data.type != "scenes":
        raise ConfigError(f"data.type: '{cfg.data.type}' is not supported (scenes, {', '.join(CORPUS_TYPES)})")
    dataset = scene_split(cfg, "train")
    if cfg.data.shuffle_captions:
        dataset = ShuffledCaptions(dataset, cfg.seed)
    if cfg.model.use_maskloss:
        entities = [dataset.entities_of(i) for i in range(len(dataset))]
        dataset = PairedDataset(dataset, PairIndex(entities), seed=cfg.seed)
    return dataset


def corpus_dataset(cfg: DictConfig, rank: int | None = None, world_size: int | None = None,
                   deferred: bool = False) -> StreamingCaptions:
    """A caption corpus read by streaming; stage 2 needs partners (a prepared pair index, the metafile's
    pairindex/pairentity columns, or, for small CSV/folder corpora, pairs drawn here from their entities).
    Imported here: the embedded scenes need neither webdataset nor kornia."""
    from .augment import TrainTransform
    from .readers import open_source
    from .streaming import StreamingCaptions

    d = cfg.data
    if d.shuffle_captions:
        raise ConfigError("data.shuffle_captions: available with data.type scenes only")
    source = open_source(d.type, d.shards, d.meta_file, d.image_root)
    extractor = entity_extractor(cfg)
    stage = 2 if cfg.train.stage == 2 else 1
    pair_transform = TrainTransform(d.image_size, d.augment, 2, deferred) if cfg.model.use_maskloss else None
    if pair_transform is not None and not source.has_pairs:
        if d.type == "webdataset":
            raise ConfigError(f"data.shards: stage 2 needs the pair index of `ovseg prepare` (none in {d.shards})")
        source.set_pairs(PairIndex([extractor.entities(source.caption_at(i)) for i in range(len(source))]))
    return StreamingCaptions(source, TrainTransform(d.image_size, d.augment, stage, deferred), seed=cfg.seed,
                             shuffle_buffer=d.shuffle_buffer, extractor=extractor, pair_transform=pair_transform,
                             rank=rank, world_size=world_size)


def entity_extractor(cfg: DictConfig) -> EntityExtractor:
    """The embedded dataset's own vocabulary, a user file, or the paper's (default)."""
    if cfg.data.entity_vocabulary:
        vocab = EntityVocabulary.load(cfg.data.entity_vocabulary)
    elif cfg.data.type == "scenes":
        vocab = entity_vocabulary()
    else:
        vocab = EntityVocabulary.load()
    return EntityExtractor(vocab, legacy_strip=cfg.data.legacy_entity_strip)


def build_collator(cfg: DictConfig, seed: int) -> CaptionCollator:
    extractor = entity_extractor(cfg) if cfg.model.use_entityloss else None
    return CaptionCollator(extractor, cfg.data.answer_templates, cfg.data.cross_entity_template, seed)
