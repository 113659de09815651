"""Per-frame reconstruction metrics: SSIM, PSNR and MSE on images in [0, 1].

Conventions (the FSE paper, 003 Table 2, names SSIM, PSNR, MSE, LPIPS and ID without a formula;
these follow the usual definitions):

* every image is converted to float64 in [0, 1] (``uint8 / 255``);
* ``mse`` = mean over pixels and channels of (a − b)²;
* ``psnr`` = 10·log10(1 / mse) dB (data range 1); identical images give ``math.inf``;
* ``ssim`` = the Gaussian-window SSIM of Wang et al. 2004 exactly as
  ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` computes it: an 11-tap
  Gaussian (σ = 1.5, truncated at 3.5σ) with reflected borders, K1 = 0.01, K2 = 0.03, the
  SSIM map averaged without the 5-pixel border, then over the channels. It is computed here
  with OpenCV's separable blur (faster; equal to skimage within 1e-6).

The paper's MSE column is on images in [-1, 1]: its PSNR and MSE only agree that way (Table 2,
"Ours": 26.64 dB ↔ MSE 0.00217 in [0, 1] ↔ 0.0087 in [-1, 1], reported 0.009). ``mse_pm1`` =
4·``mse`` is that scale.

Where: :func:`crop_scores` compares the generator's face with the aligned input crop at the
**generator's resolution** R (the paper inverts 1024 px crops with a 1024 px generator, so it
compares at R): ``aligned`` [S,S,3] is resized to R×R (area filter when shrinking, bicubic when
enlarging) and compared with ``rendered`` [R,R,3] unchanged. :func:`frame_scores` compares the
decoded input frame with the output frame (pasted face over the original background), both at the
video's resolution.

Aggregating PSNR: a per-frame ∞ (a perfect frame) cannot enter a mean. :func:`mean_psnr` averages
the finite values and reports how many were infinite; it is ∞ only when every frame is.
:func:`psnr_of_mean_mse` (10·log10(1 / mean MSE)) is the finite alternative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """[H,W,C] uint8 (0–255) or float (already 0–1) → float64 in [0, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64, copy=False)


def as_uint8_rgb(image) -> np.ndarray:
    """[H,W,3] uint8 from a uint8 array, a float array in [0,1], or a torch [3,H,W] in [-1,1]."""
    if not isinstance(image, np.ndarray):  # a torch tensor from a network, [3,H,W] in [-1, 1]
        array = image.detach().float().cpu().numpy()
        if array.ndim == 3 and array.shape[0] == 3:
            array = np.transpose(array, (1, 2, 0))
        return np.clip(np.rint((array + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_unit_float(a), to_unit_float(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two images in [0, 1] (uint8 inputs are divided by 255)."""
    a, b = _check_pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr_from_mse(value: float) -> float:
    """10·log10(1 / mse) in dB for data range 1; ``math.inf`` for mse = 0."""
    if value <= 0.0:
        return math.inf
    return float(10.0 * math.log10(1.0 / value))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB, data range 1); ``math.inf`` for identical images."""
    return psnr_from_mse(mse(a, b))


def _blur(channel: np.ndarray, radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.GaussianBlur(channel, (size, size), SSIM_SIGMA, sigmaY=SSIM_SIGMA,
                            borderType=cv2.BORDER_REFLECT)


def _ssim_map_sum(a: np.ndarray, b: np.ndarray, radius: int) -> tuple[float, int]:
    """(sum, count) of the per-channel SSIM map over the valid (border-cropped) region.

    Where an 11×11 window sees identical pixels the map is exactly 1, so only the bounding box
    of the differing pixels (grown by the window radius) is computed; the input is cut with
    another radius of margin, where that margin does not meet the image's edge (so each kept
    map value is the whole image's).
    """
    height, width = a.shape[:2]
    valid = (height - 2 * radius) * (width - 2 * radius)
    differs = np.any(a != b, axis=2)
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    channels = a.shape[2]
    if rows.size == 0:
        return float(valid * channels), valid * channels
    # map positions that may differ from 1, clipped to the valid region
    m0, m1 = max(rows[0] - radius, radius), min(rows[-1] + 1 + radius, height - radius)
    n0, n1 = max(cols[0] - radius, radius), min(cols[-1] + 1 + radius, width - radius)
    # input window: a further radius of context (the image edge where it is nearer)
    y0, y1 = max(m0 - radius, 0), min(m1 + radius, height)
    x0, x1 = max(n0 - radius, 0), min(n1 + radius, width)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    total = 0.0
    for channel in range(channels):
        x = np.ascontiguousarray(a[y0:y1, x0:x1, channel])
        y = np.ascontiguousarray(b[y0:y1, x0:x1, channel])
        ux, uy = _blur(x, radius), _blur(y, radius)
        vx = _blur(x * x, radius) - ux * ux
        vy = _blur(y * y, radius) - uy * uy
        vxy = _blur(x * y, radius) - ux * uy
        numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
        denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
        ssim_map = numerator / denominator
        total += float(ssim_map[m0 - y0:m1 - y0, n0 - x0:n1 - x0].sum())
    computed = (m1 - m0) * (n1 - n0)
    return total + float((valid - computed) * channels), valid * channels


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two [H,W,C] (or [H,W]) images in [0, 1]; see the module docstring.

    Images smaller than 11×11 raise ``ValueError`` (as skimage does).
    """
    a, b = _check_pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(a.shape[:2]) < 2 * radius + 1:
        raise ValueError(f"SSIM needs images of at least {2 * radius + 1} px, got {a.shape[:2]}")
    total, count = _ssim_map_sum(a, b, radius)
    return total / count


@dataclass(frozen=True)
class ImageScores:
    """SSIM, PSNR (dB, ∞ if identical), MSE on [0,1] and MSE on [-1,1] (= 4·mse) of one pair."""

    ssim: float
    psnr: float
    mse: float

    @property
    def mse_pm1(self) -> float:
        return 4.0 * self.mse


def image_scores(a: np.ndarray, b: np.ndarray) -> ImageScores:
    """SSIM, PSNR and MSE of two same-shaped images."""
    value = mse(a, b)
    return ImageScores(ssim=ssim(a, b), psnr=psnr_from_mse(value), mse=value)


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Square ``image`` resized to size×size: area filter when shrinking, bicubic when enlarging."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = size < image.shape[0]
    return cv2.resize(image, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def crop_scores(aligned: np.ndarray, rendered) -> ImageScores:
    """The paper's inversion metrics: ``rendered`` [R,R,3] vs ``aligned`` [S,S,3] resized to R."""
    rendered = as_uint8_rgb(rendered)
    return image_scores(resize_to(as_uint8_rgb(aligned), rendered.shape[0]), rendered)


def frame_scores(original: np.ndarray, output: np.ndarray) -> ImageScores:
    """Whole-frame metrics: the decoded input frame vs the output frame (same size)."""
    return image_scores(original, output)


# --- aggregation ---------------------------------------------------------------------------------


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def mean_psnr(values: Iterable[float | None]) -> tuple[float | None, int]:
    """(mean of the finite PSNRs, number of infinite ones); the mean is ∞ only if all are ∞.

    None values (frames without a face) are ignored. Returns (None, 0) for no values.
    """
    kept = [float(v) for v in values if v is not None]
    finite = [v for v in kept if math.isfinite(v)]
    infinite = len(kept) - len(finite)
    if finite:
        return float(np.mean(finite)), infinite
    return (math.inf if infinite else None), infinite


def psnr_of_mean_mse(mses: Iterable[float | None]) -> float | None:
    """10·log10(1 / mean MSE): finite unless every frame is perfect; None for no values."""
    mean = mean_or_none(mses)
    return None if mean is None else psnr_from_mse(mean)
