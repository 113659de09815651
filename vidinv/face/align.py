"""FFHQ alignment: the NVlabs ffhq-dataset crop, done as one affine warp with OpenCV.

The crop follows ``recreate_aligned_images`` of NVlabs/ffhq-dataset: from the eye centres and
the outer mouth corners,

* ``eye_to_eye = eye_right − eye_left``, ``eye_to_mouth = mouth_avg − eye_avg``;
* ``x = eye_to_eye − flipud(eye_to_mouth)·[−1, 1]``, normalised, times
  ``max(2·|eye_to_eye|, 1.8·|eye_to_mouth|)``; ``y = flipud(x)·[−1, 1]``;
* ``c = eye_avg + 0.1·eye_to_mouth``; quad ``[c−x−y, c−x+y, c+x+y, c+x−y]`` (NW, SW, SE, NE);
  ``qsize = 2·|x|``.

NVIDIA then shrinks the image by an integer factor (when the quad is ≥ 4× the output), crops
with a border of ``max(0.1·qsize, 3)``, reflect-pads and blurs towards the edge where the quad
leaves the image, and resamples the quad bilinearly (PIL ``QUAD``). Here the same shrink (area
filter), crop and blur-padding act only on the region around the quad, and the resampling is a
single ``cv2.warpAffine``; the quad is a parallelogram, so the map is exactly affine. The output
is rendered at the requested size directly (as STIT/e4e do), not at 4096 and downsampled.

Coordinates: points are in frame pixels with the origin at the top-left pixel's *corner*
(pixel i's centre at i + 0.5); ``crop_from_frame`` maps such points to the crop's corner
coordinates, so the crop's corners are (0, 0) … (S, S) and the quad corners map onto them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from vidinv.frame import CropQuad, FaceLandmarks

Padding = Literal["blur", "reflect", "replicate", "constant"]
Interpolation = Literal["linear", "cubic"]

_CV_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
_CV_BORDER = {
    "blur": cv2.BORDER_REFLECT_101,
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}


def quad_from_points(
    eye_left: np.ndarray,
    eye_right: np.ndarray,
    mouth_left: np.ndarray,
    mouth_right: np.ndarray,
    *,
    rotate: bool = True,
    scale: float = 1.0,
) -> CropQuad:
    """The NVlabs FFHQ crop from eye centres and outer mouth corners (frame pixels).

    ``rotate=False`` keeps the image axes (NVIDIA's ``--no-rotation``); ``scale`` enlarges the
    crop around the same centre (STIT's ``scale``; 1 is FFHQ).
    """
    eye_left = np.asarray(eye_left, dtype=np.float64)
    eye_right = np.asarray(eye_right, dtype=np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (np.asarray(mouth_left, np.float64) + np.asarray(mouth_right, np.float64)) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    extent = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    if rotate:
        x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
        norm = np.hypot(*x)
        if not norm > 0:
            raise ValueError("degenerate landmarks: eyes and mouth give no crop direction")
        x = x / norm
    else:
        x = np.array([1.0, 0.0])
    x = x * extent * scale
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + eye_to_mouth * 0.1
    return CropQuad(c, x, y)


def quad_from_landmarks(
    landmarks: FaceLandmarks, *, rotate: bool = True, scale: float = 1.0
) -> CropQuad:
    """The NVlabs FFHQ crop (c, x, y) of one face; see :func:`quad_from_points`."""
    return quad_from_points(
        landmarks.eye_left, landmarks.eye_right, landmarks.mouth_left, landmarks.mouth_right,
        rotate=rotate, scale=scale)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map [N,2] (or (2,)) points by a 3×3 homogeneous matrix; returns float64 of the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    mapped = flat @ matrix[:2, :2].T + matrix[:2, 2]
    if not np.allclose(matrix[2], [0.0, 0.0, 1.0]):
        mapped = mapped / (flat @ matrix[2, :2] + matrix[2, 2])[:, None]
    return mapped.reshape(pts.shape)


def translation(dx: float, dy: float) -> np.ndarray:
    """3×3 translation matrix."""
    matrix = np.eye(3)
    matrix[0, 2] = dx
    matrix[1, 2] = dy
    return matrix


def cv_inverse_map(dst_from_src: np.ndarray) -> np.ndarray:
    """2×3 matrix for ``cv2.warpAffine(..., flags | WARP_INVERSE_MAP)``.

    ``dst_from_src`` maps corner coordinates; OpenCV indexes pixel centres, so the result maps
    destination pixel indices to source pixel indices: T(−½) · src_from_dst · T(+½).
    """
    src_from_dst = np.linalg.inv(dst_from_src)
    return (translation(-0.5, -0.5) @ src_from_dst @ translation(0.5, 0.5))[:2]


def warp_to(
    image: np.ndarray,
    dst_from_src: np.ndarray,
    size: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REPLICATE,
    border_value: float | tuple = 0,
) -> np.ndarray:
    """Resample ``image`` into a (width, height) canvas through an affine corner-coordinate map."""
    return cv2.warpAffine(
        image, cv_inverse_map(dst_from_src), (int(size[0]), int(size[1])),
        flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=border_value)


def warp_to_antialiased(
    image: np.ndarray,
    dst_from_src: np.ndarray,
    size: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REPLICATE,
) -> np.ndarray:
    """Like :func:`warp_to`, but shrinks the needed region first (area filter) when the map
    minifies by 2× or more, so a large face resampled to a small canvas does not alias."""
    scale = math.sqrt(abs(np.linalg.det(dst_from_src[:2, :2])))
    shrink = int(math.floor(0.5 / scale)) if scale > 0 else 1
    if shrink <= 1:
        return warp_to(image, dst_from_src, size, interpolation=interpolation, border=border)
    height, width = image.shape[:2]
    outline = np.array([[0, 0], [size[0], 0], [0, size[1]], [size[0], size[1]]], np.float64)
    corners = apply_transform(np.linalg.inv(dst_from_src), outline)
    margin = 2 * shrink
    x0 = max(int(math.floor(corners[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + margin, width)
    y1 = min(int(math.ceil(corners[:, 1].max())) + margin, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return warp_to(image, dst_from_src, size, interpolation=interpolation, border=border)
    region = image[y0:y1, x0:x1]
    small_size = (max(1, round((x1 - x0) / shrink)), max(1, round((y1 - y0) / shrink)))
    small = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
    small_from_frame = np.diag([small_size[0] / (x1 - x0), small_size[1] / (y1 - y0), 1.0])
    small_from_frame = small_from_frame @ translation(-x0, -y0)
    return warp_to(small, dst_from_src @ np.linalg.inv(small_from_frame), size,
                   interpolation=interpolation, border=border)


def _fast_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an [H,W,C] float32 image; wide kernels run on a downsampled copy."""
    if sigma <= 0.3:
        return image.copy()
    factor = int(sigma // 3)
    height, width = image.shape[:2]
    if factor < 2 or min(height, width) < 4 * factor:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)),
                       interpolation=cv2.INTER_AREA)
    # the box filter of the area resize and the bilinear upsampling add ~f²/4 of variance
    small_sigma = math.sqrt(max(sigma**2 - factor**2 / 4, (factor / 2) ** 2)) / factor
    small = cv2.GaussianBlur(small, (0, 0), small_sigma, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _blur_padding(crop: np.ndarray, work_from_crop: np.ndarray, region: np.ndarray,
                  quad: np.ndarray, qsize: float, border: int) -> np.ndarray:
    """NVIDIA's padding step, carried out on the (reflect-padded) crop instead of the frame.

    NVIDIA pads the cropped frame region by a reflection (every side by at least 0.3·qsize
    once any side needs padding), blurs it more towards the outer edge (σ = 0.02·qsize, full
    blur from a third of the pad inside the region) and fades it to the median colour. The map
    from that padded region to the crop is a similarity, so the same ramps evaluated at each
    crop pixel and a blur of σ = 0.02·S in the crop give the same picture at S² cost.
    ``quad``/``qsize``/``border`` are in the region's (``work``) pixels; the median colour is
    the region's (NVIDIA's is the padded region's, nearly the same). Returns the crop.
    """
    height, width = region.shape[:2]
    pad = [
        max(-int(math.floor(quad[:, 0].min())) + border, 0),
        max(-int(math.floor(quad[:, 1].min())) + border, 0),
        max(int(math.ceil(quad[:, 0].max())) - width + border, 0),
        max(int(math.ceil(quad[:, 1].max())) - height + border, 0),
    ]
    if max(pad) <= border - 4:
        return crop
    least = max(int(np.rint(qsize * 0.3)), 1)
    left, top, right, bottom = (max(p, least) for p in pad)
    size = crop.shape[0]
    # each crop pixel centre in the padded region's pixel indices
    centres = (np.arange(size, dtype=np.float64) + 0.5)
    ju, iv = np.meshgrid(centres, centres)
    a = work_from_crop
    xs = (a[0, 0] * ju + a[0, 1] * iv + a[0, 2] - 0.5 + left).astype(np.float32)
    ys = (a[1, 0] * ju + a[1, 1] * iv + a[1, 2] - 0.5 + top).astype(np.float32)
    w = width + left + right
    h = height + top + bottom
    mask = np.maximum(1.0 - np.minimum(xs / left, (w - 1 - xs) / right),
                      1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom))[..., None]
    if mask.max() <= -1.0 / 3.0:
        return crop
    img = crop.astype(np.float32)
    img += (_fast_gaussian(img, 0.02 * size) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    step = max(1, int(math.sqrt(height * width / 65_536)))  # a subsample's median is plenty
    median = np.median(region[::step, ::step].reshape(-1, region.shape[2]), axis=0)
    img += (median.astype(np.float32) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def align_from_quad(
    image: np.ndarray,
    quad: CropQuad | np.ndarray | Sequence,
    size: int,
    *,
    padding: Padding = "blur",
    interpolation: Interpolation = "linear",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the FFHQ crop ``quad`` of ``image`` to an S×S image.

    Args:
        image: [H,W,3] uint8 RGB frame (any channel count works).
        quad: a :class:`CropQuad`, a (c, x, y) triple, a (6,) vector or [4,2] NW/SW/SE/NE corners.
        size: output side S in pixels (1024 for FFHQ, 256 for the encoder, anything else).
        padding: what fills the crop where it leaves the frame: ``"blur"`` (NVIDIA: reflection
            blurred and faded to the median colour towards the edge), ``"reflect"`` (plain
            reflection, cheapest), ``"replicate"`` or ``"constant"`` (black).
        interpolation: ``"linear"`` (as NVIDIA) or ``"cubic"``.

    Returns:
        ``(crop, crop_from_frame)``: [S,S,3] uint8 and the 3×3 float64 map from frame pixels to
        crop pixels (corner coordinates).
    """
    quad = CropQuad.coerce(quad)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an [H,W,C] uint8 image, got {image.shape} {image.dtype}")
    size = int(size)
    crop_from_frame = quad.crop_from_frame(size)
    corners = quad.corners
    qsize = quad.qsize
    height, width = image.shape[:2]

    # Shrink (NVIDIA: integer factor when the quad is at least 4× the output), then crop with a
    # border; both only on the region around the quad.
    shrink = int(math.floor(qsize / size * 0.5))
    shrink = shrink if shrink > 1 else 1
    border = max(int(np.rint(qsize / shrink * 0.1)), 3)
    x0 = max(int(math.floor(corners[:, 0].min())) - border * shrink, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - border * shrink, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + border * shrink, width)
    y1 = min(int(math.ceil(corners[:, 1].max())) + border * shrink, height)
    if x1 <= x0:  # the quad lies wholly beside the frame: pad from the nearest column
        x0 = min(max(x0, 0), width - 1)
        x1 = x0 + 1
    if y1 <= y0:
        y0 = min(max(y0, 0), height - 1)
        y1 = y0 + 1
    region = image[y0:y1, x0:x1]
    work_from_frame = translation(-x0, -y0)
    if shrink > 1:
        small_size = (max(1, round((x1 - x0) / shrink)), max(1, round((y1 - y0) / shrink)))
        region = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
        work_from_frame = np.diag([small_size[0] / (x1 - x0), small_size[1] / (y1 - y0), 1.0]) \
            @ work_from_frame

    crop_from_work = crop_from_frame @ np.linalg.inv(work_from_frame)
    crop = warp_to(region, crop_from_work, (size, size),
                   interpolation=_CV_INTERPOLATION[interpolation], border=_CV_BORDER[padding])
    if padding == "blur":
        crop = _blur_padding(
            crop, np.linalg.inv(crop_from_work), region,
            apply_transform(work_from_frame, corners), qsize / shrink, border)
    return crop, crop_from_frame


def align_face(
    image: np.ndarray, landmarks: FaceLandmarks, size: int, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quad_from_landmarks` then :func:`align_from_quad` (keyword arguments go there)."""
    return align_from_quad(image, quad_from_landmarks(landmarks), size, **kwargs)


def ffhq_canonical_points(quad: CropQuad, landmarks: FaceLandmarks, size: int) -> np.ndarray:
    """Where FFHQ alignment puts the eye centres and mouth corners in an S×S crop, from the
    closed form (each point's components along the unit axes of x and y, relative to c).

    Returns [4,2]: eye_left, eye_right, mouth_left, mouth_right. Used to check warps.
    """
    pts = np.stack([landmarks.eye_left, landmarks.eye_right,
                    landmarks.mouth_left, landmarks.mouth_right]).astype(np.float64)
    rel = pts - quad.c
    u = rel @ (quad.x / np.hypot(*quad.x))
    v = rel @ (quad.y / np.hypot(*quad.y))
    half = quad.qsize / 2
    return np.stack([(u / half + 1) * size / 2, (v / half + 1) * size / 2], axis=1)
