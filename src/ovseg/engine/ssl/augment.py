"""DINO's multi-crop views of a batch, in plain torch on the whole batch at once (2 CPU cores cannot afford a
per-image pipeline): random resized crops with flips (one ``grid_sample``), colour jitter, grayscale,
Gaussian blur (one grouped convolution, a kernel per image) and solarisation. Randomness comes from torch's
global generator, which the training checkpoints save: a resumed run draws the same views."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.augment import normalize_0_1

# ITU-R BT.601 luma, and RGB <-> YIQ for a hue turn (rotation of the chroma plane)
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class ViewKind:
    """How one kind of view is drawn: its side in pixels, the share of the image it covers, and the
    probabilities of blur and solarisation (DINO: 1.0/0 for the first global view, 0.1/0.2 for the second,
    0.5/0 for the local ones)."""

    size: int
    scale: tuple[float, float]
    blur: float
    solarize: float = 0.0


def resized_crops(images: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size): per image a crop of ``scale`` of its area, aspect ratio in
    [3/4, 4/3], anywhere inside it, mirrored with probability 1/2, resampled bilinearly."""
    b, device = images.shape[0], images.device
    area = torch.empty(b, device=device).uniform_(*scale)
    ratio = torch.exp(torch.empty(b, device=device).uniform_(math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # fractions of the side
    cx, cy = (torch.rand(b, device=device) * 2 - 1) * (1 - w), (torch.rand(b, device=device) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, p: float = 0.8, strength: tuple[float, ...] = (0.4, 0.4, 0.2, 0.1)) -> torch.Tensor:
    """Brightness, contrast, saturation (factors 1 ± s) and hue (a turn of ± s of a full circle), each image
    jittered with probability ``p``; values stay in [0, 1]."""
    b = x.shape[0]
    on = (torch.rand(b, 1, 1, 1, device=x.device) < p).float()
    bright, contrast, sat, hue = strength

    def factor(s: float) -> torch.Tensor:
        return 1 + on * (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * s

    x = (x * factor(bright)).clamp(0, 1)
    mean = gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * factor(contrast) + mean).clamp(0, 1)
    g = gray(x)
    x = ((x - g) * factor(sat) + g).clamp(0, 1)
    return hue_turn(x, on.view(b) * (torch.rand(b, device=x.device) * 2 - 1) * hue * 2 * math.pi)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return torch.einsum("bchw,c->bhw", x, x.new_tensor(LUMA)).unsqueeze(1)


def hue_turn(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Turn each image's chroma by ``angle`` (B,) radians in YIQ space; luma is kept."""
    to_yiq = x.new_tensor(RGB_TO_YIQ)
    from_yiq = torch.linalg.inv(to_yiq)
    cos, sin = angle.cos(), angle.sin()
    turn = torch.zeros(len(angle), 3, 3, device=x.device)
    turn[:, 0, 0], turn[:, 1, 1], turn[:, 1, 2], turn[:, 2, 1], turn[:, 2, 2] = 1, cos, -sin, sin, cos
    matrix = from_yiq @ turn @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x).clamp(0, 1)


def random_grayscale(x: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    on = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
    return torch.where(on, gray(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, p: float, sigma: tuple[float, float] = (0.1, 1.0), radius: int = 2) -> torch.Tensor:
    """Blur each image with probability ``p`` (sigma drawn from ``sigma`` pixels); the others pass through a
    one-tap kernel. One separable grouped convolution for the batch."""
    b, c, h, w = x.shape
    s = torch.empty(b, device=x.device).uniform_(*sigma)
    s = torch.where(torch.rand(b, device=x.device) < p, s, torch.full_like(s, 1e-3))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * s[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, 2r+1)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
    return flat.reshape(b, c, h, w)


def solarize(x: torch.Tensor, p: float) -> torch.Tensor:
    on = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
    return torch.where(on & (x >= 0.5), 1 - x, x)


class MultiCrop:
    """uint8 (B, 3, H, W) -> [global 1, global 2, local 1, ...]: normalised (B, 3, s, s) float views."""

    def __init__(
        self,
        global_size: int,
        global_scale: tuple[float, float],
        local_crops: int,
        local_size: int,
        local_scale: tuple[float, float],
    ):
        self.kinds = [ViewKind(global_size, global_scale, blur=1.0), ViewKind(global_size, global_scale, 0.1, 0.2)]
        self.kinds += [ViewKind(local_size, local_scale, blur=0.5)] * local_crops

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255
        return [self.view(x, kind) for kind in self.kinds]

    @staticmethod
    def view(x: torch.Tensor, kind: ViewKind) -> torch.Tensor:
        v = random_grayscale(colour_jitter(resized_crops(x, kind.size, kind.scale)))
        v = gaussian_blur(v, kind.blur)
        if kind.solarize:
            v = solarize(v, kind.solarize)
        return normalize_0_1(v)
