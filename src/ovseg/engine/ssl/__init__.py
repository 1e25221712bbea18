"""Self-supervised pretraining of the quickstart's image encoder (``ovseg pretrain-ssl``): the stem, the
position table and the blocks before the grouping learn from scene images alone — no captions, masks or
category ids — on a stream of scenes that no split uses, as the paper's encoder starts from DINO.

- ``stream``: the scene images (seeds disjoint from train/val/test);
- ``augment``: multi-crop views, batched in plain torch;
- ``backbone``: the trained part of GroupViT, exported under the encoder's names;
- ``dino``: DINO (multi-crop, EMA teacher, centring and sharpening, projection head);
- ``ibot``: DINO + masked patch tokens (a dense loss on every masked patch);
- ``simmim``: masked pixel prediction (a linear head paints the masked patches back; no teacher);
- ``loop``: steps, schedules, checkpoints, resume, metrics and the exported file.
"""

from .loop import SslResult, pretrain

__all__ = ["SslResult", "pretrain"]
