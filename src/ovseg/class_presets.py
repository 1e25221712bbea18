"""Class-name presets (``--vocab voc``, or ``voc`` typed on the web page): the class lists of the evaluation sets
exactly as the original evaluates them (spec §4.4, Appendix B).

Foreground classes only: "background" is never prompted, it comes from the threshold. The GroupViT renames
are kept (VOC: table, plant, monitor; Context: airplane, plant, monitor) and so is ADE20K's 'bed ' with its
trailing space, so that text embeddings equal the original's.
"""

from __future__ import annotations

from .errors import OvsegError

# PASCAL VOC 2012: 20 classes (+ background by threshold 0.95).
VOC = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'table', 'dog',
    'horse', 'motorbike', 'person', 'plant', 'sheep', 'sofa', 'train', 'monitor',
)

# PASCAL Context: 59 classes (+ background by threshold 0.35).
CONTEXT = (
    'airplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird', 'boat', 'book', 'bottle', 'building',
    'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair', 'cloth', 'computer', 'cow', 'cup', 'curtain', 'dog',
    'door', 'fence', 'floor', 'flower', 'food', 'grass', 'ground', 'horse', 'keyboard', 'light', 'motorbike',
    'mountain', 'mouse', 'person', 'plate', 'platform', 'plant', 'road', 'rock', 'sheep', 'shelves',
    'sidewalk', 'sign', 'sky', 'snow', 'sofa', 'table', 'track', 'train', 'tree', 'truck', 'monitor', 'wall',
    'water', 'window', 'wood',
)

# COCO-Object: the 80 COCO thing classes (+ background by threshold 0.9).
COCO_OBJECT = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush',
)

# COCO-Stuff: 171 classes (80 things + 91 stuff), the original's extra config.
COCO_STUFF = COCO_OBJECT + (
    'banner', 'blanket', 'branch', 'bridge', 'building-other',
    'bush', 'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling-other', 'ceiling-tile', 'cloth', 'clothes',
    'clouds', 'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt', 'door-stuff', 'fence', 'floor-marble',
    'floor-other', 'floor-stone', 'floor-tile', 'floor-wood', 'flower', 'fog', 'food-other', 'fruit',
    'furniture-other', 'grass', 'gravel', 'ground-other', 'hill', 'house', 'leaves', 'light', 'mat', 'metal',
    'mirror-stuff', 'moss', 'mountain', 'mud', 'napkin', 'net', 'paper', 'pavement', 'pillow', 'plant-other',
    'plastic', 'platform', 'playingfield', 'railing', 'railroad', 'river', 'road', 'rock', 'roof', 'rug',
    'salad', 'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow', 'solid-other', 'stairs', 'stone',
    'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel', 'tree', 'vegetable', 'wall-brick',
    'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone', 'wall-tile', 'wall-wood', 'water-other',
    'waterdrops', 'window-blind', 'window-other', 'wood',
)

# ADE20K: 150 classes, no background (label 0 is ignored).
ADE20K = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed ', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
    'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
    'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake',
    'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray',
    'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag',
)

PRESETS: dict[str, tuple[str, ...]] = {"voc": VOC, "context": CONTEXT, "coco": COCO_OBJECT,
                                       "coco_stuff": COCO_STUFF, "ade": ADE20K}


def resolve_class_names(words: list[str]) -> list[str]:
    """``["voc"]`` -> the preset's class names; anything else is a custom vocabulary. A leading
    "background" is dropped (it is decided by the threshold, never prompted)."""
    if len(words) == 1 and words[0] in PRESETS:
        return list(PRESETS[words[0]])
    names = [w.strip() for w in words if w.strip()]
    if names and names[0].lower() == "background":
        names = names[1:]
    if not names:
        raise OvsegError("the vocabulary is empty: give class names or a preset (" + ", ".join(PRESETS) + ")")
    return names


# ---- the later 8-benchmark suite (TCL's harness; raw mmseg names, no GroupViT renames) ----

# PASCAL VOC 2012 without background (TCL's PascalVOCDataset20: label 0 ignored): the raw mmseg names,
# i.e. VOC with GroupViT's renames undone.
VOC20 = tuple({"table": "diningtable", "plant": "pottedplant", "monitor": "tvmonitor"}.get(n, n) for n in VOC)

# PASCAL Context 59 (mmseg PascalContextDataset59: label 0 ignored): CONTEXT with the renames undone.
CONTEXT59 = tuple({"airplane": "aeroplane", "plant": "pottedplant", "monitor": "tvmonitor"}.get(n, n) for n in CONTEXT)

# Cityscapes: the 19 train ids (mmseg CityscapesDataset).
CITYSCAPES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign', 'vegetation',
    'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle',
)
