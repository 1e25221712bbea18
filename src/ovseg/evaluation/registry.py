"""The evaluation sets (benchmark datasets) as data: folders, file suffixes, class names, label conventions, defaults.

The paper's four (spec §4.2) follow OVSegmentor/GroupViT (mmseg 0.18 datasets, GroupViT renames); the
later suite (VOC20, PC59, COCO-Stuff-171, Cityscapes) follows TCL's configs with mmseg's raw names.
Label conventions after reading: 255 is ignored; ``reduce_zero_label`` maps 0 → 255 and k → k − 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import class_presets as V
from ..errors import OvsegError


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set. ``classes`` are the prompted foreground names; with ``background`` the dataset's
    class 0 is "background", decided by the threshold and never prompted. ``ann_dirs``: candidates, the
    first that exists is used. ``split``: image list (stems), else ``img_dir`` is scanned recursively."""

    name: str
    title: str
    classes: tuple[str, ...]
    background: bool
    img_dir: str
    ann_dirs: tuple[str, ...]
    img_suffix: str
    seg_suffix: str
    split: str | None = None
    reduce_zero_label: bool = False
    default_root: str = ""
    root_guesses: tuple[str, ...] = ()
    config: str = ""
    num_val: int = 0
    paper_miou: float | None = None
    invalid_hint: str = ""

    @property
    def class_names(self) -> list[str]:
        """Every evaluated class, index = label value ("background" first where scored)."""
        return (["background"] if self.background else []) + list(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes) + int(self.background)

    def layout(self) -> str:
        """The expected folder layout, for error messages."""
        parts = [f"{self.img_dir}/*{self.img_suffix}", f"{self.ann_dirs[0]}/*{self.seg_suffix}"]
        if self.split:
            parts.append(self.split)
        return ", ".join(parts)


_VOC = dict(img_dir="JPEGImages", ann_dirs=("SegmentationClass",), img_suffix=".jpg", seg_suffix=".png",
            split="ImageSets/Segmentation/val.txt", default_root="VOCdevkit/VOC2012",
            root_guesses=("VOC2012", "VOCdevkit/VOC2012"), num_val=1449)
_CONTEXT = dict(img_dir="JPEGImages", ann_dirs=("SegmentationClassContext",), img_suffix=".jpg",
                seg_suffix=".png", split="ImageSets/SegmentationContext/val.txt", default_root="VOCdevkit/VOC2010",
                root_guesses=("VOC2010", "VOCdevkit/VOC2010"), num_val=5105)
_COCO = dict(img_dir="images/val2017", img_suffix=".jpg", root_guesses=("coco", "coco_stuff164k"), num_val=5000)
_STUFF_HINT = ("labels above 80 in COCO-Object annotations are COCO-Stuff labels (OVSegmentor's own converter "
               "keeps stuff classes, spec §4.6); rebuild them with `ovseg convert-coco-object`")

EVAL_SETS: dict[str, EvalSet] = {b.name: b for b in (
    EvalSet("voc", "PASCAL VOC 2012", V.VOC, True, **_VOC, config="test_voc12", paper_miou=53.8),
    EvalSet("context", "PASCAL Context", V.CONTEXT, True, **_CONTEXT, config="test_voc_context",
              paper_miou=20.4),
    EvalSet("coco_object", "COCO-Object", V.COCO_OBJECT, True, **_COCO,
              ann_dirs=("annotations/val2017_cocoobject", "annotations/val2017"),
              seg_suffix="_instanceTrainIds.png", default_root="coco", config="test_coco", paper_miou=25.1,
              invalid_hint=_STUFF_HINT),
    EvalSet("ade20k", "ADE20K", V.ADE20K, False, img_dir="images/validation",
              ann_dirs=("annotations/validation",), img_suffix=".jpg", seg_suffix=".png", reduce_zero_label=True,
              default_root="ade/ADEChallengeData2016", num_val=2000, config="test_ade20k", paper_miou=5.6,
              root_guesses=("ADEChallengeData2016", "ade/ADEChallengeData2016")),
    EvalSet("voc20", "PASCAL VOC 2012, 20 classes", V.VOC20, False, **_VOC, reduce_zero_label=True,
              config="test_voc20"),
    EvalSet("context59", "PASCAL Context, 59 classes", V.CONTEXT59, False, **_CONTEXT, reduce_zero_label=True,
              config="test_context59"),
    EvalSet("coco_stuff", "COCO-Stuff-171", V.COCO_STUFF, False, **_COCO, ann_dirs=("annotations/val2017",),
              seg_suffix="_labelTrainIds.png", default_root="coco_stuff164k", config="test_coco_stuff"),
    EvalSet("cityscapes", "Cityscapes", V.CITYSCAPES, False, img_dir="leftImg8bit/val", ann_dirs=("gtFine/val",),
              img_suffix="_leftImg8bit.png", seg_suffix="_gtFine_labelTrainIds.png", default_root="cityscapes",
              root_guesses=("cityscapes",), num_val=500, config="test_cityscapes"),
)}

ALIASES = {"voc12": "voc", "voc21": "voc", "pascal_voc": "voc", "context60": "context", "pc60": "context",
           "pascal_context": "context", "coco": "coco_object", "ade": "ade20k", "pc59": "context59",
           "stuff": "coco_stuff", "coco_stuff171": "coco_stuff"}

PAPER_SUITE = ("voc", "context", "coco_object", "ade20k")
TCL_SUITE = ("voc", "voc20", "context", "context59", "coco_stuff", "coco_object", "cityscapes", "ade20k")


def get_eval_set(name: str) -> EvalSet:
    """An evaluation set by name or alias (``voc``, ``pc59``, ``coco`` …)."""
    key = ALIASES.get(name.lower().replace("-", "_"), name.lower().replace("-", "_"))
    if key not in EVAL_SETS:
        raise OvsegError(f"unknown dataset '{name}' (one of: {', '.join(EVAL_SETS)})")
    return EVAL_SETS[key]
