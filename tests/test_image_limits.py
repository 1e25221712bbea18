"""Image size limits are ovseg's own checks, read from the header before decoding; PIL's global is untouched."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.data.decode import decode_region, verify_image
from ovseg.data.samples import SkippedSample
from ovseg.errors import ImageError
from ovseg.images import MAX_IMAGE_PIXELS, load_image, open_lazily

ROOT = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: 20000×20000 is 48 kB on disk and 400 MB once decoded by PIL."""
    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bilevel_png(20_000, 20_000)


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_ovseg_leaves_pil_globals_alone():
    run_python("""
        from PIL import Image, ImageFile
        default = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        import ovseg, ovseg.cli, ovseg.demo, ovseg.data.decode, ovseg.data.prepare
        assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == default, Image.MAX_IMAGE_PIXELS
    """)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to read the peak memory")
def test_huge_image_refused_in_one_line_before_decoding(tmp_path, bomb):
    """A 48 kB PNG of 20000×20000 pixels: refused from its header, the 400 MB are never allocated."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    assert path.stat().st_size < 100_000
    out = run_python("""
        import re, sys
        from ovseg.errors import ImageError
        from ovseg.images import load_image

        def peak_kib():  # VmHWM: this process's peak resident memory
            return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

        before = peak_kib()
        try:
            load_image(sys.argv[1])
        except ImageError as e:
            print(e)
        print(peak_kib() - before)
    """, str(path))
    message, grew_kib = out.splitlines()
    assert str(path) in message and "20000×20000" in message and "200 M pixels" in message, message
    assert int(grew_kib) < 50 * 1024  # the 400 MB of pixels were never allocated


def test_limit_is_a_keyword_and_images_within_it_load(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(path)
    assert load_image(path).shape == (30, 40, 3)
    with pytest.raises(ImageError, match=r"small\.png: 40×30 = 0\.0 M pixels, over ovseg's limit of 0\.001 M"):
        load_image(path, max_pixels=1000)
    assert "\n" not in str(pytest.raises(ImageError, load_image, path, max_pixels=10).value)


def test_ovseg_limit_not_pil_global_decides(tmp_path):
    """Between PIL's default (89 M warns, 179 M refuses) and ovseg's 200 M: no PIL warning or error on ovseg's
    calls; PIL's own Image.open still guards everyone else."""
    data = bilevel_png(14_000, 14_000)  # 196 M pixels
    assert 2 * Image.MAX_IMAGE_PIXELS < 14_000**2 <= MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_lazily(io.BytesIO(data)).size == (14_000, 14_000)
        assert open_lazily(io.BytesIO(bilevel_png(10_000, 10_000))).size == (10_000, 10_000)  # 100 M
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


def test_training_decode_skips_an_oversized_image(bomb):
    for call in (lambda: verify_image(bomb, "shard.tar:3"),
                 lambda: decode_region(bomb, lambda w, h: (0, 0, w, h), 32, "shard.tar:3")):
        with pytest.raises(SkippedSample) as e:
            call()
        assert e.value.reason == "corrupt image" and "shard.tar:3 (20000×20000" in str(e.value)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buf, format="JPEG")
    assert verify_image(buf.getvalue(), "ok") == "jpg"
    with pytest.raises(SkippedSample, match="over ovseg's limit"):
        verify_image(buf.getvalue(), "ok", max_pixels=100)
    assert decode_region(buf.getvalue(), lambda w, h: (0, 0, w, h), 16, "ok").shape == (16, 16, 3)


def test_not_an_image_is_one_line(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: not a readable image \(UnidentifiedImageError"):
        load_image(path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (37, 21), 90).save(buf, format=fmt)
    return buf.getvalue()


SAMPLES = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "ICO", "PPM", "TGA", "PCX")}
SAMPLES |= {"L16": _encoded("PNG", "I;16"), "empty": b"", "text": b"hello, not an image", "jpeg-ish": b"\xff\xd8\xff!",
            "png-ish": _encoded("PNG")[:40], "bmp-ish": b"BM" + bytes(30)}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_format_detection_as_image_open(name):
    """open_lazily finds what Image.open finds (format, size, mode) and fails where it fails."""
    def outcome(opener):
        try:
            img = opener(io.BytesIO(SAMPLES[name]))
        except Exception as e:  # the exception type is the outcome compared
            return type(e)
        return img.format, img.size, img.mode

    assert outcome(open_lazily) == outcome(Image.open)
