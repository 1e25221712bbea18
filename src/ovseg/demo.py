"""Segment a folder of photos and write one picture per visualisation mode (the seed's ``main_demo``).

    seg = Segmenter.from_checkpoint("ovsegmentor.pth")
    summary = run_demo(seg, "photos/", "out/", DemoOptions(modes=("input_pred_label", "mask"),
                                                            class_names=["cat", "dog", "person|man|woman"]))

Outputs go to ``OUT/<mode>/<path relative to the input folder>`` with the extension of the mode (``mask``
and ``pred`` PNG, the others JPEG), each written atomically; the input folder is only read. Inputs whose
names differ only by extension keep it (``a.jpg``, ``a.png`` -> ``a.jpg.png``, ``a.png.png``; see
``output_stems``), and the summary lists them. ``mask`` holds label indices (0 = background, k = the k-th
class) and ``OUT/mask/classes.json`` says what they mean.
No printing here: results are returned (and failures logged at debug level); the CLI reports them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import OvsegError
from .fileio import atomic_write, atomic_write_json
from .inference import Prediction, Segmenter
from .inference.class_names import display_name, parse_class_names
from .label_stats import pixel_shares
from .viz import add_legend, class_palette, draw_class_names, overlay_labels, region_anchors, render_groups

log = logging.getLogger(__name__)

MODES = ("input", "pred", "input_pred", "input_pred_label", "mask", "all_groups", "first_group", "final_group")
GROUP_MODES = ("all_groups", "first_group", "final_group")
PNG_MODES = ("pred", "mask")
# names the original's help text listed although its code rejected them
MODE_ALIASES = {"input_pred_seg_label": "input_pred_label", "input_seg": "input_pred", "last_group": "final_group"}
DEFAULT_MODES = ("input_pred_label",)
JPEG_QUALITY = 92


@dataclass
class DemoOptions:
    """What to draw and with which vocabulary. ``bg_thresh`` None: no background class; ``templates``
    None: the config's (simple)."""

    modes: tuple[str, ...] = DEFAULT_MODES
    class_names: list[str] = field(default_factory=list)
    bg_thresh: float | None = 0.95
    templates: str | None = None


@dataclass
class ImageResult:
    """One input: the files written (empty when it failed), its time, and the classes present
    (name, pixel share) largest first."""

    source: Path
    outputs: list[Path]
    seconds: float
    error: str | None = None
    present: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class DemoSummary:
    """Every input's result, in order, the seconds spent on them (model loading not included), and the
    inputs whose output name keeps their extension because another input has the same name without it
    (input -> output path relative to ``OUT/<mode>/``, minus the mode's extension)."""

    results: list[ImageResult]
    seconds: float
    renamed: dict[Path, Path] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(r.error is None for r in self.results)

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(len(self.results), 1)


def normalize_modes(modes: Iterable[str] | None) -> tuple[str, ...]:
    """Modes in the order given, aliases resolved, duplicates dropped; None or empty -> the default."""
    out: list[str] = []
    for mode in modes or DEFAULT_MODES:
        mode = MODE_ALIASES.get(mode, mode)
        if mode not in MODES:
            raise OvsegError(f"unknown --vis mode '{mode}' (choose from {', '.join(MODES)})")
        if mode not in out:
            out.append(mode)
    return tuple(out)


def find_images(folder: str | Path, recursive: bool = False, exclude: str | Path | None = None) -> list[Path]:
    """Every visible file of ``folder`` (sub-folders too when ``recursive``), sorted; hidden files and
    folders (``.name``) and anything under ``exclude`` are left out. Non-images are kept: they fail
    one by one when read, so the user hears about them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OvsegError(f"image folder not found: {folder}")
    skip = Path(exclude).resolve() if exclude is not None else None
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    files = []
    for path in pattern:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        files.append(path)
    if not files:
        hint = "" if recursive else " (use --recursive for sub-folders)"
        raise OvsegError(f"no files in the image folder {folder}{hint}")
    return sorted(files)


def output_stems(files: list[Path], folder: str | Path) -> dict[Path, Path]:
    """Each input -> its output path without extension, relative to ``OUT/<mode>/``: the input's relative
    path minus its suffix (``a.jpg`` -> ``a``), or the whole relative path when that stem is shared by another
    input or equals another's whole path (``a.jpg``, ``a.png``, ``a.jpg.png`` -> ``a.jpg``, ``a.png``,
    ``a.jpg.png``). Whole paths are distinct, and a kept stem is neither shared nor anyone's whole path,
    so no two inputs ever share an output; the choice depends on the set of names only (not their order)."""
    whole = {f: f.relative_to(folder) for f in files}
    stems = {f: rel.with_suffix("") for f, rel in whole.items()}
    count: dict[Path, int] = {}
    for stem in stems.values():
        count[stem] = count.get(stem, 0) + 1
    taken = set(whole.values())
    return {f: stem if count[stem] == 1 and stem not in taken else whole[f] for f, stem in stems.items()}


def renamed_outputs(stems: dict[Path, Path], folder: str | Path) -> dict[Path, Path]:
    """The inputs whose output keeps their extension to avoid a collision (input -> output stem)."""
    return {f: stem for f, stem in stems.items() if stem != f.relative_to(folder).with_suffix("")}


def check_output_folder(image_folder: str | Path, output_folder: str | Path) -> None:
    """The input folder is never written to: refuse an output folder inside it."""
    inp, out = Path(image_folder).resolve(), Path(output_folder).resolve()
    if out == inp or out.is_relative_to(inp):
        raise OvsegError(f"the output folder {output_folder} is inside the image folder {image_folder}; "
                         "choose another (the input folder is never written to)")


def label_classes(class_names: list[str]) -> list[str]:
    """Names of the mask's label indices: "background" then the display names of the classes."""
    return ["background"] + [display_name(n) for n in class_names]


def mask_array(pred: Prediction, background: bool) -> np.ndarray:
    """(H, W) indices into ``label_classes``: 0 = background, k = the k-th class, whether or not the
    prediction used a background class (``background``; without it 0 never occurs). uint8, or uint16
    beyond 255 classes."""
    labels = pred.labels.numpy() + (0 if background else 1)
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def present_classes(mask: np.ndarray, names: list[str]) -> list[tuple[int, float]]:
    """(label index, pixel share) of every class in ``mask`` but background, largest first."""
    shares = pixel_shares(mask, len(names))
    order = np.argsort(-shares, kind="stable")
    return [(int(k), float(shares[k])) for k in order if k > 0 and shares[k] > 0]


def write_run_info(output_folder: str | Path, options: DemoOptions, extra: dict | None = None) -> Path:
    """``OUT/mask/classes.json``: the meaning of the mask's indices, their colours and the settings."""
    classes = label_classes(options.class_names)
    info = {"classes": classes, "vocabulary": list(options.class_names),
            "background": options.bg_thresh is not None, "palette": class_palette(len(classes)).tolist(),
            "settings": asdict(options) | (extra or {})}
    return atomic_write_json(Path(output_folder) / "mask" / "classes.json", info)


def _save(image: Image.Image, path: Path) -> Path:
    fmt = "PNG" if path.suffix == ".png" else "JPEG"
    kwargs = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **kwargs))
    return path


def _label_picture(mode: str, rgb: np.ndarray, mask: np.ndarray, names: list[str]) -> Image.Image:
    """The picture of one label mode: pred (paletted PNG), mask, input_pred or input_pred_label."""
    palette = class_palette(len(names))
    if mode == "mask":
        return Image.fromarray(mask)
    if mode == "pred":
        if mask.dtype != np.uint8:  # beyond 256 labels a palette cannot hold the colours
            return Image.fromarray(palette[mask])
        image = Image.fromarray(mask, mode="L").convert("P")
        image.putpalette(palette.flatten().tolist())
        return image
    picture = Image.fromarray(overlay_labels(rgb, mask, palette))
    if mode == "input_pred":
        return picture
    picture = draw_class_names(picture, region_anchors(mask), names)
    return add_legend(picture, [(names[k], tuple(palette[k]), share) for k, share in present_classes(mask, names)])


def render(mode: str, rgb: np.ndarray, mask: np.ndarray | None, names: list[str],
           groups: list[np.ndarray] | None) -> list[tuple[str, Image.Image]]:
    """(file-name suffix, picture) of one mode for one image; ``all_groups`` gives one per grouping block.
    rgb (H, W, 3) uint8; mask (H, W) from ``mask_array``; groups (h, w) uint8 maps from
    ``Segmenter.group_layers``."""
    if mode == "input":
        return [("", Image.fromarray(rgb))]
    if mode in GROUP_MODES:
        picks = {"all_groups": range(len(groups)), "first_group": [0], "final_group": [len(groups) - 1]}[mode]
        return [(f"_layer{i}" if mode == "all_groups" else "", Image.fromarray(render_groups(rgb, groups[i])))
                for i in picks]
    return [("", _label_picture(mode, rgb, mask, names))]


def _segment(segmenter: Segmenter, rgb: np.ndarray, options: DemoOptions
             ) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
    """(mask, group maps) of one image, each only when a requested mode needs it."""
    mask = groups = None
    if set(options.modes) - {"input", *GROUP_MODES}:
        pred = segmenter.predict(rgb, options.class_names, bg_thresh=options.bg_thresh, templates=options.templates)
        mask = mask_array(pred, options.bg_thresh is not None)
    if set(options.modes) & set(GROUP_MODES):
        groups = [g.numpy() for g in segmenter.group_layers(rgb)]
    return mask, groups


def process_image(segmenter: Segmenter, path: Path, stem: Path, output_folder: Path,
                  options: DemoOptions) -> ImageResult:
    """Segment one file and write its pictures to ``output_folder/<mode>/<stem><suffix>.<ext>``. A file
    that cannot be read, segmented or written gives a failed result (the run goes on); bugs propagate."""
    start = time.perf_counter()
    names = label_classes(options.class_names)
    try:
        rgb = np.array(segmenter.read(path))  # a writable copy (PIL's buffer is read-only; torch warns)
        mask, groups = _segment(segmenter, rgb, options)
        outputs = []
        for mode in options.modes:
            ext = ".png" if mode in PNG_MODES else ".jpg"
            for suffix, picture in render(mode, rgb, mask, names, groups):
                outputs.append(_save(picture, output_folder / mode / stem.parent / f"{stem.name}{suffix}{ext}"))
    except (OvsegError, OSError, ValueError, RuntimeError, Image.DecompressionBombError) as e:
        log.debug("failed on %s", path, exc_info=True)
        message = (str(e).splitlines() or [type(e).__name__])[0]
        return ImageResult(path, [], time.perf_counter() - start,
                           error=message if str(path) in message else f"{path}: {message}")
    present = [(names[k], share) for k, share in present_classes(mask, names)] if mask is not None else []
    return ImageResult(path, outputs, time.perf_counter() - start, present=present)


def segment_folder(segmenter: Segmenter, files: list[Path], image_folder: str | Path, output_folder: str | Path,
                   options: DemoOptions) -> Iterator[ImageResult]:
    """Process ``files`` (from ``find_images``) one by one, yielding each result as it is written."""
    stems = output_stems(files, image_folder)
    for path in files:
        yield process_image(segmenter, path, stems[path], Path(output_folder), options)


def run_demo(segmenter: Segmenter, image_folder: str | Path, output_folder: str | Path, options: DemoOptions,
             recursive: bool = False, progress: Callable[[Iterator[ImageResult], int], Iterable[ImageResult]]
             | None = None) -> DemoSummary:
    """The whole demo: find the inputs, write ``classes.json`` (with ``mask``), segment every file.
    ``progress(iterator, total)`` may wrap the loop (e.g. ``lambda it, n: tqdm(it, total=n)``)."""
    check_output_folder(image_folder, output_folder)
    options = replace(options, modes=normalize_modes(options.modes))
    parse_class_names(options.class_names)  # an empty vocabulary fails before any work
    files = find_images(image_folder, recursive, exclude=output_folder)
    if "mask" in options.modes:
        write_run_info(output_folder, options)
    start = time.perf_counter()
    results = segment_folder(segmenter, files, image_folder, output_folder, options)
    done = list(progress(results, len(files)) if progress else results)
    renamed = renamed_outputs(output_stems(files, image_folder), image_folder)
    return DemoSummary(done, time.perf_counter() - start, renamed)
