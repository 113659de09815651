"""Paste-back: warp a rendered S×S face into the frame and blend it in with a feathered mask.

The mask lives in aligned (crop) space: either a template ellipse over the FFHQ face region or
the convex hull of the face's landmarks (plus the forehead), eroded and blurred so the seam
falls inside the face and fades out. Only the frame's box around the mask is touched, so the
cost depends on the face's size, not the frame's. Optional colour matching moves the rendered
face's per-channel mean and standard deviation (in Lab or RGB) onto the frame's, inside the mask.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import cv2
import numpy as np

from vidinv.config import ColorMatch, FaceMask
from vidinv.face.align import apply_transform, cv_inverse_map
from vidinv.frame import FaceLandmarks

# FFHQ crops put the eyes at y ≈ 0.47 S, the mouth at ≈ 0.72 S and the chin near 0.9 S; this
# ellipse covers brows to chin and cheek to cheek.
ELLIPSE_CENTRE = (0.5, 0.56)
ELLIPSE_AXES = (0.31, 0.38)


def ellipse_mask(size: int, *, erode: float = 0.02, feather: float = 0.04) -> np.ndarray:
    """[S,S] float32 in [0,1]: the template face ellipse, shrunk by ``erode``·S and blurred with
    σ = ``feather``·S."""
    binary = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision of cv2.ellipse
    centre = tuple(int(round(v * size * (1 << shift))) for v in ELLIPSE_CENTRE)
    axes = tuple(int(round(max(a - erode, 0.01) * size * (1 << shift))) for a in ELLIPSE_AXES)
    cv2.ellipse(binary, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_AA, shift)
    return _feathered(binary, size, feather)


def landmark_mask(size: int, landmarks: FaceLandmarks, crop_from_frame: np.ndarray, *,
                  erode: float = 0.02, feather: float = 0.04) -> np.ndarray:
    """[S,S] float32 in [0,1]: the convex hull of the face's points in the crop, with three
    forehead points added (dlib's 68 stop at the brows), eroded and blurred."""
    eye_avg = (landmarks.eye_left + landmarks.eye_right) / 2
    mouth_avg = (landmarks.mouth_left + landmarks.mouth_right) / 2
    up = eye_avg - mouth_avg
    forehead = np.stack([landmarks.eye_left + 0.8 * up, eye_avg + 1.0 * up,
                         landmarks.eye_right + 0.8 * up])
    points = apply_transform(crop_from_frame, np.concatenate([landmarks.points, forehead]))
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    binary = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(binary, hull, 255, cv2.LINE_AA, 4)
    radius = int(round(erode * size))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        binary = cv2.erode(binary, kernel)
    return _feathered(binary, size, feather)


def _feathered(binary: np.ndarray, size: int, feather: float) -> np.ndarray:
    """Blur a uint8 mask and keep it at zero along the crop's edge (no seam at the border)."""
    mask = binary.astype(np.float32) / 255.0
    sigma = feather * size
    if sigma > 0.3:
        margin = min(int(math.ceil(2 * sigma)) + 1, size // 4)
        mask[:margin] = mask[-margin:] = 0
        mask[:, :margin] = mask[:, -margin:] = 0
        mask = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1.0 / 512] = 0.0
    return mask


def match_colors(face: np.ndarray, target: np.ndarray, weights: np.ndarray,
                 space: Literal["lab", "rgb"] = "lab") -> np.ndarray:
    """Shift ``face``'s per-channel mean/std onto ``target``'s, both [h,w,3] uint8 RGB, the
    statistics weighted by ``weights`` [h,w] (the mask). Returns [h,w,3] uint8 RGB."""
    w = weights.astype(np.float64)[..., None]
    total = float(w.sum())
    if total < 1.0:
        return face

    def convert(image: np.ndarray) -> np.ndarray:
        rgb = image.astype(np.float32) / 255.0
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB) if space == "lab" else rgb

    src, dst = convert(face), convert(target)
    mean_s = (src * w).sum(axis=(0, 1)) / total
    mean_d = (dst * w).sum(axis=(0, 1)) / total
    std_s = np.sqrt(((src - mean_s) ** 2 * w).sum(axis=(0, 1)) / total) + 1e-6
    std_d = np.sqrt(((dst - mean_d) ** 2 * w).sum(axis=(0, 1)) / total)
    out = ((src - mean_s) * (std_d / std_s) + mean_d).astype(np.float32)
    if space == "lab":
        out = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def mask_support(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of a mask's non-zero pixels (the whole mask if empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0, 0, mask.shape[1], mask.shape[0])
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def frame_box(mask: np.ndarray, crop_from_frame: np.ndarray, shape: tuple[int, ...]
              ) -> tuple[int, int, int, int] | None:
    """The frame box (x0, y0, x1, y1) that ``mask``'s support reaches in a frame of ``shape``
    (H, W, …) through ``crop_from_frame`` (for a crop of the mask's side), or None if empty."""
    height, width = shape[:2]
    x0, y0, x1, y1 = mask_support(mask)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
    frame_corners = apply_transform(np.linalg.inv(crop_from_frame), corners)
    bx0 = max(int(math.floor(frame_corners[:, 0].min())) - 1, 0)
    by0 = max(int(math.floor(frame_corners[:, 1].min())) - 1, 0)
    bx1 = min(int(math.ceil(frame_corners[:, 0].max())) + 1, width)
    by1 = min(int(math.ceil(frame_corners[:, 1].max())) + 1, height)
    if bx1 <= bx0 or by1 <= by0:
        return None
    return bx0, by0, bx1, by1


def paste_back(
    image: np.ndarray,
    face: np.ndarray,
    crop_from_frame: np.ndarray,
    mask: np.ndarray,
    *,
    crop_size: int | None = None,
    color_match: ColorMatch = "none",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a rendered face into a frame.

    Args:
        image: [H,W,3] uint8 RGB frame.
        face: [S,S,3] uint8 RGB rendered face, in the aligned crop's geometry.
        crop_from_frame: 3×3 frame → crop map for a crop of side ``crop_size`` (default S; a
            face rendered at another size than the crop it came from is rescaled to fit).
        mask: [S,S] float32 in [0,1] in the face's geometry (:func:`ellipse_mask`,
            :func:`landmark_mask`).
        color_match: ``"lab"`` or ``"rgb"`` to match the face's colour statistics to the
            frame's inside the mask, or ``"none"``.
        out: where to write (may be ``image`` itself); a copy of ``image`` by default.

    Returns:
        The frame with the face blended in; pixels where the warped mask is 0 are ``image``'s,
        bit for bit.
    """
    size = face.shape[0]
    if face.shape[:2] != (size, size) or mask.shape != (size, size):
        raise ValueError(f"face {face.shape} and mask {mask.shape} must be the same S×S")
    if crop_size is not None and crop_size != size:
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ crop_from_frame
    if out is None:
        out = image.copy()

    box = frame_box(mask, crop_from_frame, image.shape[:2])
    if box is None:
        return out
    bx0, by0, bx1, by1 = box

    # crop ← box: crop_from_frame · T(box origin)
    crop_from_box = crop_from_frame @ np.array([[1, 0, bx0], [0, 1, by0], [0, 0, 1]], np.float64)
    box_from_crop = np.linalg.inv(crop_from_box)
    box_size = (bx1 - bx0, by1 - by0)
    inverse = cv_inverse_map(box_from_crop)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped_face = cv2.warpAffine(face, inverse, box_size, flags=flags,
                                 borderMode=cv2.BORDER_REPLICATE)
    warped_mask = cv2.warpAffine(mask, inverse, box_size, flags=flags,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = image[by0:by1, bx0:bx1]
    if color_match != "none":
        warped_face = match_colors(warped_face, region, warped_mask, color_match)
    # alpha·face + (1 − alpha)·frame, rounded; exactly the frame where alpha is 0
    out[by0:by1, bx0:bx1] = cv2.blendLinear(warped_face, np.ascontiguousarray(region),
                                            warped_mask, 1.0 - warped_mask)
    return out


class FacePaster:
    """Paste-back with the mask chosen once; template masks are cached per size.

    Args:
        mask: ``"ellipse"`` (template in aligned space) or ``"landmarks"`` (hull of the face's
            points; falls back to the ellipse when a frame has no landmarks).
        erode: how far the mask is pulled inside the face region, as a fraction of S.
        feather: σ of the blur softening the seam, as a fraction of S.
        color_match: ``"none"``, ``"lab"`` or ``"rgb"`` (see :func:`paste_back`).
    """

    def __init__(self, mask: FaceMask = "ellipse", *, erode: float = 0.02,
                 feather: float = 0.04, color_match: ColorMatch = "none") -> None:
        if mask not in typing.get_args(FaceMask):
            raise ValueError(f"mask must be one of {', '.join(typing.get_args(FaceMask))}, "
                             f"not {mask!r}")
        if color_match not in typing.get_args(ColorMatch):
            raise ValueError(f"color_match must be one of {', '.join(typing.get_args(ColorMatch))}"
                             f", not {color_match!r}")
        self.mask = mask
        self.erode = float(erode)
        self.feather = float(feather)
        self.color_match = color_match
        self._ellipses: dict[int, np.ndarray] = {}

    def mask_for(self, size: int, crop_from_frame: np.ndarray | None = None,
                 landmarks: FaceLandmarks | None = None) -> np.ndarray:
        """[S,S] float32 mask for a face of side S (``crop_from_frame`` for that S)."""
        if self.mask == "landmarks" and landmarks is not None and crop_from_frame is not None:
            return landmark_mask(size, landmarks, crop_from_frame, erode=self.erode,
                                 feather=self.feather)
        if size not in self._ellipses:
            self._ellipses[size] = ellipse_mask(size, erode=self.erode, feather=self.feather)
        return self._ellipses[size]

    def __call__(self, image: np.ndarray, face: np.ndarray, crop_from_frame: np.ndarray, *,
                 crop_size: int | None = None, landmarks: FaceLandmarks | None = None,
                 ) -> np.ndarray:
        size = face.shape[0]
        if crop_size is not None and crop_size != size:
            crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ crop_from_frame
        mask = self.mask_for(size, crop_from_frame, landmarks)
        return paste_back(image, face, crop_from_frame, mask, color_match=self.color_match)
