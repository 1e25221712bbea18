"""Pictures of predictions: palettes, label overlays, class names and legends, group maps.

Pure numpy + PIL (no torch): arrays in, arrays or PIL images out, so that the demo, the web UI and
notebooks draw the same pictures. Charts (``plot.py``: training curves, per-class IoU) use matplotlib.
"""

from .groups import render_groups
from .labels import draw_class_names, region_anchors
from .legend import add_legend
from .overlay import blend, colorize, overlay_labels
from .palette import class_palette, group_palette

__all__ = ["add_legend", "blend", "class_palette", "colorize", "draw_class_names", "group_palette",
           "overlay_labels", "region_anchors", "render_groups"]
