"""Landmark-guided expression warps of aligned face crops: training data in which the
attributes to be edited actually vary.

A clip of someone talking rarely holds a smile, a wide-open mouth, closed eyes or a turned head,
so a model trained on it has nothing to learn those edits from. Each warp here moves a few
MediaPipe face-mesh points (mouth corners, lips, eyelids, the face's centre line) by an
``amount`` in [0, 1] (yaw: [-1, 1]), keeps the eyes, brows, forehead, jaw outline and the crop's
border where they are (unless the warp is about them), interpolates the displacements to a
dense field with a thin-plate spline, and resamples the crop. These warps are used only to make
training data for ``vidinv personalize``; at edit time the motion comes from the model.

Points are [468,2] float (x, y) in crop pixels (MediaPipe's face mesh order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: MediaPipe face-mesh indices.
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
MOUTH_CORNERS = (61, 291)
CHEEKS = (205, 425, 50, 280, 207, 427)
CHIN = (152, 148, 377, 176, 400, 175, 199)
EYE_UPPER = ((159, 158, 160, 157, 161), (386, 385, 387, 384, 388))
EYE_LOWER = ((145, 144, 153, 154, 163), (374, 373, 380, 381, 390))
EYE_CORNERS = (33, 133, 362, 263)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)
CENTRE_LINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199,
               175, 152)
NOSE_TIP = 1

#: The warps and the range of their ``amount``.
WARPS = ("smile", "mouth_open", "eyes_closed", "yaw")
AMOUNT_RANGE = {"smile": (0.0, 1.0), "mouth_open": (0.0, 1.0), "eyes_closed": (0.0, 1.0),
                "yaw": (-1.0, 1.0)}
#: How far one control point's motion reaches, in inter-ocular distances.
REACH = {"smile": 0.15, "mouth_open": 0.15, "eyes_closed": 0.06, "yaw": 0.3}
#: The model's edit name for each warp and the sign that maps the warp onto it
#: (eyes_open is the opposite of closing them).
EDIT_OF_WARP = {"smile": ("smile", 1.0), "mouth_open": ("mouth_open", 1.0),
                "eyes_closed": ("eyes_open", -1.0), "yaw": ("yaw", 1.0)}


@dataclass(frozen=True)
class ControlPoints:
    """Where control points are (``source`` [K,2]) and where the warp puts them (``target``)."""

    source: np.ndarray
    target: np.ndarray


def _unit(points: np.ndarray) -> float:
    """The inter-ocular distance of a [468,2] landmark set, in pixels."""
    left = points[list(EYE_UPPER[0] + EYE_LOWER[0])].mean(0)
    right = points[list(EYE_UPPER[1] + EYE_LOWER[1])].mean(0)
    return float(np.linalg.norm(right - left))


def _fixed(points: np.ndarray, indices: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(points[i], np.zeros(2)) for i in indices]


def _border(size: int, per_side: int = 6) -> np.ndarray:
    edge = np.linspace(0, size - 1, per_side)
    top = np.stack([edge, np.zeros_like(edge)], 1)
    bottom = np.stack([edge, np.full_like(edge, size - 1)], 1)
    left = np.stack([np.zeros_like(edge), edge], 1)
    right = np.stack([np.full_like(edge, size - 1), edge], 1)
    return np.concatenate([top, bottom, left, right])


def control_points(kind: str, points: np.ndarray, amount: float, size: int) -> ControlPoints:
    """The control points of warp ``kind`` at ``amount`` for landmarks ``points`` [468,2]."""
    if kind not in WARPS:
        raise ValueError(f"unknown warp {kind!r}; known: {', '.join(WARPS)}")
    unit = _unit(points)
    moves: list[tuple[np.ndarray, np.ndarray]] = []
    mouth_centre = points[list(MOUTH_CORNERS)].mean(0)
    half_width = 0.5 * float(np.linalg.norm(points[MOUTH_CORNERS[1]] - points[MOUTH_CORNERS[0]]))
    if kind == "smile":
        # Corners out and up; the lips follow by how far they are from the mouth's centre;
        # cheeks rise a little.
        for i in set(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER):
            offset = points[i] - mouth_centre
            t = float(np.clip(offset[0] / max(half_width, 1e-6), -1, 1))
            dx = 0.16 * unit * amount * t
            dy = -0.10 * unit * amount * t * t
            moves.append((points[i], np.array([dx, dy])))
        for i in CHEEKS:
            moves.append((points[i], np.array([0.0, -0.05 * unit * amount])))
        moves += _fixed(points, CHIN + BROWS + EYE_CORNERS + (NOSE_TIP,))
    elif kind == "mouth_open":
        # The lower lip and the chin drop; the upper lip stays.
        for i in LIPS_INNER_LOWER[1:-1] + LIPS_OUTER_LOWER[1:-1]:
            moves.append((points[i], np.array([0.0, 0.28 * unit * amount])))
        for i in CHIN:
            moves.append((points[i], np.array([0.0, 0.20 * unit * amount])))
        for i in LIPS_INNER_UPPER + (0, 37, 39, 40, 185, 267, 269, 270, 409):
            moves.append((points[i], np.zeros(2)))
        moves += _fixed(points, BROWS + EYE_CORNERS + (NOSE_TIP,))
    elif kind == "eyes_closed":
        # Upper lids come down onto the lower lids; below the lower lid the skin holds still
        # (no fixed point on the lower lid itself, which would halve the lids' motion).
        for upper, lower in zip(EYE_UPPER, EYE_LOWER, strict=True):
            for i, j in zip(upper, lower, strict=True):
                gap = points[j] - points[i]
                moves.append((points[i], amount * gap))
                moves.append((points[j] + 0.8 * gap + np.array([0.0, 0.04 * unit]),
                              np.zeros(2)))
        moves += _fixed(points, EYE_CORNERS + BROWS + (NOSE_TIP,) + MOUTH_CORNERS)
    else:  # yaw: the centre line shifts sideways, most at the nose tip; the outline stays.
        nose = points[NOSE_TIP]
        for i in CENTRE_LINE:
            closeness = float(np.exp(-np.linalg.norm(points[i] - nose) ** 2 / (0.8 * unit) ** 2))
            moves.append((points[i], np.array([0.35 * unit * amount * closeness, 0.0])))
        for i in EYE_CORNERS + MOUTH_CORNERS:
            moves.append((points[i], np.array([0.15 * unit * amount, 0.0])))
    moves += _fixed(points, FACE_OVAL) if kind != "mouth_open" else _fixed(
        points, tuple(i for i in FACE_OVAL if i not in CHIN))
    moves += [(p, np.zeros(2)) for p in _border(size)]
    source = np.array([m[0] for m in moves], dtype=np.float64)
    target = source + np.array([m[1] for m in moves], dtype=np.float64)
    return ControlPoints(source=source, target=target)


def dense_backward_map(control: ControlPoints, size: int, sigma: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) [size,size] float32 for ``cv2.remap``: output pixel -> source pixel.

    The backward displacement (source − target) of the control points, spread by normalised
    Gaussian weights of width ``sigma`` around each target (with a small weight on "no
    motion", so the field fades to zero away from the points). Unlike a thin-plate spline this
    never overshoots between close points that move apart (eyelids), so nothing folds.
    ``sigma`` (pixels) is how far one point's motion reaches. Evaluated on a lattice finer
    than ``sigma`` (at most every pixel) and bilinearly upsampled.
    """
    import cv2

    grid = int(min(size, max(16, np.ceil(2 * size / max(sigma, 1e-6)))))
    axis = np.linspace(0, size - 1, grid)
    gx, gy = np.meshgrid(axis, axis)
    lattice = np.stack([gx.ravel(), gy.ravel()], 1)
    lattice = lattice.astype(np.float32)
    target = control.target.astype(np.float32)
    squared = ((lattice ** 2).sum(1)[:, None] + (target ** 2).sum(1)[None]
               - 2.0 * lattice @ target.T)                        # [G², K] squared distances
    weights = np.exp(-np.maximum(squared, 0) / np.float32(2 * sigma * sigma))
    shift = weights @ (control.source - control.target).astype(np.float32)
    shift /= weights.sum(1, keepdims=True) + 1e-2
    shift = cv2.resize(shift.reshape(grid, grid, 2).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return xs + shift[..., 0], ys + shift[..., 1]


def _darken_mouth(image: np.ndarray, points: np.ndarray, amount: float) -> np.ndarray:
    """Shade the gap between the lips that ``mouth_open`` creates (warping alone stretches
    lip colour into it)."""
    import cv2

    upper = points[list(LIPS_INNER_UPPER)]
    lower = points[list(LIPS_INNER_LOWER)].copy()
    lower[:, 1] += 0.28 * _unit(points) * amount * np.r_[0, np.ones(len(lower) - 2), 0]
    polygon = np.concatenate([upper, lower[::-1]]).astype(np.float32)
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, image.shape[0] / 160))[..., None]
    inside = np.array([45, 12, 16], np.float32)
    return (image * (1 - 0.9 * mask) + inside * 0.9 * mask).astype(np.uint8)


def warp_face(image: np.ndarray, points: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """``image`` [S,S,3] uint8 with warp ``kind`` at ``amount``; ``points`` [468,2] in it."""
    import cv2

    if image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square crop, got {image.shape}")
    low, high = AMOUNT_RANGE[kind]
    amount = float(np.clip(amount, low, high))
    if amount == 0.0:
        return image.copy()
    size = image.shape[0]
    control = control_points(kind, points, amount, size)
    map_x, map_y = dense_backward_map(control, size, REACH[kind] * _unit(points))
    warped = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    if kind == "mouth_open":
        warped = _darken_mouth(warped, points, amount)
    return warped
