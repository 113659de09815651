"""Differentiable augmentation for GAN training on tiny data sets (DiffAugment).

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (2020): the same
random, differentiable transforms are applied to real *and* generated images before the
discriminator sees them, so D cannot memorise a few hundred images and G still gets gradients
through the transform. The policy is a comma-separated string of:

* ``color``: brightness (add U(-0.5, 0.5)), saturation (scale the deviation from the per-pixel
  channel mean by U(0, 2)), contrast (scale the deviation from the image mean by U(0.5, 1.5));
* ``translation``: shift by a whole number of pixels in [-R/8, R/8] on each axis, zero fill;
* ``cutout``: zero one R/2 × R/2 square at a random centre (clipped at the border).

Images are [B,3,R,R] float in about [-1,1] (zero is mid grey). Every random number is drawn on
the CPU from the ``torch.Generator`` passed in, so a run is reproducible from its RNG state; the
parameters are drawn per sample.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ('color', 'translation'); '' or 'none' -> ()."""
    names = tuple(part.strip() for part in policy.split(",") if part.strip())
    if names in ((), ("none",)):
        return ()
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r} in policy {policy!r}; choose from "
                             f"{', '.join(POLICIES)}")
    return names


def _uniform(batch: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """[B,1,1,1] U(0,1), drawn on the CPU, on ``like``'s device and dtype."""
    values = torch.rand(batch, 1, 1, 1, generator=generator)
    return values.to(device=like.device, dtype=like.dtype)


def _randint(low: int, high: int, batch: int, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    """[B] int64 uniform in [low, high)."""
    return torch.randint(low, high, (batch,), generator=generator).to(device)


def random_color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness, saturation and contrast jitter; [B,C,H,W] -> [B,C,H,W]."""
    batch = x.shape[0]
    x = x + (_uniform(batch, generator, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(batch, generator, x) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(batch, generator, x) + 0.5) + mean


def translate(x: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Move sample b's content down by ``shift_y[b]`` and right by ``shift_x[b]`` pixels.

    x: [B,C,H,W]; shifts: [B] int64 with |shift| ≤ H (W). Uncovered pixels are 0.
    """
    batch, _, height, width = x.shape
    pad = int(max(shift_y.abs().max().item(), shift_x.abs().max().item(), 0))
    if pad == 0:
        return x
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    device = x.device
    rows = torch.arange(height, device=device)[None, :] - shift_y[:, None] + pad  # [B,H]
    cols = torch.arange(width, device=device)[None, :] - shift_x[:, None] + pad  # [B,W]
    index = torch.arange(batch, device=device)[:, None, None]
    # Advanced indices around a slice: the result is [B,H,W,C].
    moved = padded[index, :, rows[:, :, None], cols[:, None, :]]
    return moved.permute(0, 3, 1, 2)


def random_translation(x: torch.Tensor, generator: torch.Generator,
                       ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by whole pixels in [-ratio·size, ratio·size]; zero fill."""
    batch, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = _randint(-max_y, max_y + 1, batch, generator, x.device)
    shift_x = _randint(-max_x, max_x + 1, batch, generator, x.device)
    return translate(x, shift_y, shift_x)


def random_cutout(x: torch.Tensor, generator: torch.Generator,
                  ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio·H)×(ratio·W) rectangle per sample, centred anywhere in the image."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # As in DiffAugment: the window's centre may sit on the far border when the size is even.
    top = _randint(0, height + (1 - size_y % 2), batch, generator, x.device) - size_y // 2
    left = _randint(0, width + (1 - size_x % 2), batch, generator, x.device) - size_x // 2
    rows = torch.arange(height, device=x.device)[None, :] - top[:, None]  # [B,H]
    cols = torch.arange(width, device=x.device)[None, :] - left[:, None]  # [B,W]
    inside_y = (rows >= 0) & (rows < size_y)
    inside_x = (cols >= 0) & (cols < size_x)
    cut = inside_y[:, :, None] & inside_x[:, None, :]  # [B,H,W]
    return x * (~cut)[:, None].to(x.dtype)


class DiffAugment:
    """Apply a DiffAugment policy: ``DiffAugment("color,translation,cutout")(x, generator)``.

    x: [B,3,H,W] float in about [-1,1] -> same shape; differentiable with respect to x.
    """

    def __init__(self, policy: str = DEFAULT_POLICY, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5) -> None:
        self.policy = parse_policy(policy)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.policy) or 'none'!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for name in self.policy:
            if name == "color":
                x = random_color(x, generator)
            elif name == "translation":
                x = random_translation(x, generator, self.translation_ratio)
            else:
                x = random_cutout(x, generator, self.cutout_ratio)
        return x

