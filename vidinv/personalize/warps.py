"""Expression warps of aligned face crops: training data in which the attributes to be edited
actually vary.

A clip of someone talking rarely holds a smile, a frown, closed eyes or a turned head, so a
model trained on it has nothing to learn those edits from. ``vidinv personalize`` warps the
person's own frames with the expression bank's action units (:mod:`vidinv.face.expressions`:
where each AU moves the face-mesh points, and the dense field they drive) and adds here what
motion cannot make: for the smile the upper teeth between parted lips (the person's own where
the clip has a frame with them, else a synthesised band) and deeper nasolabial folds (a soft
shading nose wing → mouth corner); the inside of an opened mouth; the lid skin that covers a
closed eye; the irises moved inside the eye opening for gaze (a smooth displacement bump
around them, the sclera squeezed on one side and stretched on the other, the lids unmoved).

Points are [468,2] or [478,2] float (x, y) in crop pixels (MediaPipe's face mesh order; the last
10 are the refined iris points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidinv.face.expressions import (
    AMOUNT_RANGE,
    EYE_CONTOURS,
    EYE_CORNERS,
    EYE_UPPER,
    IRISES,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER,
    MEANING,
    MOUTH_CORNERS,
    NOSE_TIP,
    NOSE_WINGS,
    REACH,
    ROLL_DEGREES,
    TOOTH_HEIGHT,
    WARPS,
    MeshMoves,
    control_points,
    dense_backward_map,
    interocular,
    iris_centres,
    mesh_moves,
    teeth_amount,
)

# --- appearance that motion cannot make -------------------------------------------------------


def _polygon_mask(shape: tuple[int, int], polygon: np.ndarray, blur: float) -> np.ndarray:
    import cv2

    scale = 4  # sub-pixel polygon edges
    big = np.zeros((shape[0] * scale, shape[1] * scale), np.uint8)
    cv2.fillPoly(big, [np.round(polygon * scale).astype(np.int32)], 255)
    mask = cv2.resize(big, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) / 255.0
    if blur > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    return mask.astype(np.float32)


def mouth_gap(moves: MeshMoves) -> np.ndarray:
    """[K,2]: the opening between the inner lips after the move (upper, then lower reversed)."""
    upper = np.array([moves.target(i) for i in LIPS_INNER_UPPER])
    lower = np.array([moves.target(i) for i in LIPS_INNER_LOWER])
    return np.concatenate([upper, lower[::-1]])


@dataclass(frozen=True)
class MouthInside:
    """The person's own open mouth: ``image`` [h,w,3] uint8, the box from the inner lip corners
    (x) and from the upper to the lower inner lip (y) of the frame where it was widest."""

    image: np.ndarray


def find_mouth_inside(crops: np.ndarray, points: np.ndarray, min_gap: float = 0.08,
                      min_brightness: float = 1.25) -> MouthInside | None:
    """The inside of the mouth of the crop whose inner lips are farthest apart, when they are
    apart (≥ ``min_gap`` u) and the upper part of the opening is brighter than the lips by
    ``min_brightness`` × (teeth show); None when no frame has it."""
    best, best_gap = None, min_gap
    for crop, p in zip(crops, points, strict=True):
        u = interocular(p)
        gap = float(np.mean([p[j, 1] - p[i, 1] for i, j in
                             zip(LIPS_INNER_UPPER[3:8], LIPS_INNER_LOWER[3:8], strict=True)])) / u
        if gap > best_gap:
            best, best_gap = (crop, p), gap
    if best is None:
        return None
    crop, p = best
    x0, x1 = int(np.floor(p[78, 0])), int(np.ceil(p[308, 0])) + 1
    y0 = int(np.floor(p[list(LIPS_INNER_UPPER), 1].min()))
    y1 = int(np.ceil(p[list(LIPS_INNER_LOWER), 1].max())) + 1
    if x1 - x0 < 4 or y1 - y0 < 3:
        return None
    inside = crop[y0:y1, x0:x1]
    lips = crop[_polygon_mask(crop.shape[:2], p[list(LIPS_OUTER)], 0) > 0.5]
    upper_half = inside[: max(1, (y1 - y0) // 2)]
    if upper_half.mean() < min_brightness * lips.mean():
        return None
    return MouthInside(image=inside.copy())


def _fill_mouth(image: np.ndarray, moves: MeshMoves, teeth: float,
                inside: MouthInside | None) -> np.ndarray:
    """Paint the opening between the moved inner lips: the person's own mouth inside when
    given, else a synthesised one — upper teeth as a light, slightly shaded band under the upper
    lip (``teeth`` 0…1: how much of the opening they fill), dark below."""
    import cv2

    polygon = mouth_gap(moves)
    size = image.shape[0]
    mask = _polygon_mask(image.shape[:2], polygon, max(0.5, size / 256))
    if mask.max() < 0.05:
        return image
    x0, y0 = np.floor(polygon.min(0)).astype(int)
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image
    if inside is not None:
        fill = cv2.resize(inside.image, (x1 - x0, y1 - y0),
                          interpolation=cv2.INTER_CUBIC).astype(np.float32)
    else:
        skin = image[int(moves.target(164)[1]) - 1:int(moves.target(164)[1]) + 2,
                     int(moves.target(164)[0]) - 1:int(moves.target(164)[0]) + 2].reshape(-1, 3)
        bright = float(np.clip(skin.mean() * 1.15 if len(skin) else 200, 150, 235))
        tooth = np.array([bright, bright * 0.96, bright * 0.88], np.float32)
        dark = np.array([38, 18, 20], np.float32)
        ys = np.arange(y1 - y0, dtype=np.float32)[:, None]
        xs = np.arange(x1 - x0, dtype=np.float32)[None]
        # the upper lip's line over this box, so the band hugs it
        top = np.interp(xs[0] + x0, polygon[:len(LIPS_INNER_UPPER), 0],
                        polygon[:len(LIPS_INNER_UPPER), 1])[None] - y0
        bottom = np.interp(xs[0] + x0, polygon[len(LIPS_INNER_UPPER):, 0][::-1],
                           polygon[len(LIPS_INNER_UPPER):, 1][::-1])[None] - y0
        depth = np.clip((ys - top) / np.maximum(bottom - top, 1.0), 0, 1)
        opening = np.maximum(bottom - top, 1.0)
        band = np.minimum(0.6, TOOTH_HEIGHT * teeth * interocular(moves.points) / opening)
        in_band = np.clip((band - depth) / 0.15 + 0.5, 0, 1)[..., None]
        across = np.abs((xs - 0.5 * (x1 - x0 - 1)) / max(0.5 * (x1 - x0), 1.0))
        shade = (1 - 0.35 * across ** 2 - 0.2 * depth / np.maximum(band, 1e-3))[..., None]
        region = image[y0:y1, x0:x1].astype(np.float32)
        # below the teeth: the mouth's own dark inside where it was open, else dark
        fill = in_band * tooth * np.clip(shade, 0.5, 1) + (1 - in_band) * np.minimum(region,
                                                                                    dark)
    region = image[y0:y1, x0:x1].astype(np.float32)
    alpha = mask[y0:y1, x0:x1, None]
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + fill * alpha, 0, 255).astype(np.uint8)
    return out


def _shade_folds(image: np.ndarray, moves: MeshMoves, depth: float) -> np.ndarray:
    """Deepen the nasolabial folds: a soft darkening along nose wing → (moved) mouth corner,
    just outside the corner."""
    import cv2

    u = interocular(moves.points)
    size = image.shape[0]
    line = np.zeros(image.shape[:2], np.float32)
    for wing, corner in zip(NOSE_WINGS, MOUTH_CORNERS, strict=True):
        start = moves.target(wing)
        end = moves.target(corner)
        outward = np.sign(end[0] - moves.target(NOSE_TIP)[0])
        start = start + np.array([outward * 0.04 * u, 0.0])
        end = end + np.array([outward * 0.07 * u, -0.05 * u])
        scale = 4
        big = np.zeros((size * scale, size * scale), np.float32)
        cv2.line(big, tuple(np.round(start * scale).astype(int)),
                 tuple(np.round(end * scale).astype(int)), 1.0,
                 thickness=max(1, int(round(0.03 * u * scale))), lineType=cv2.LINE_AA)
        line += cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    line = cv2.GaussianBlur(np.clip(line, 0, 1), (0, 0), max(0.8, 0.04 * u))
    line /= max(float(line.max()), 1e-6)
    dark = 1 - 0.10 * depth * line[..., None]
    return np.clip(image.astype(np.float32) * dark, 0, 255).astype(np.uint8)


def _move_irises(image: np.ndarray, points: np.ndarray, amount: float, axis: int
                 ) -> np.ndarray:
    """Move each iris inside its eye opening by ``amount`` of its free travel: a smooth bump of
    displacement centred on the iris (width about its radius, so nothing folds) moves the iris
    and squeezes / stretches the sclera beside it; only the pixels inside the eye's outline
    change, so the lids stay where they are."""
    import cv2

    u = interocular(points)
    size = image.shape[0]
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    out = image.astype(np.float32)
    for side, centre in enumerate(iris_centres(points)):
        contour = points[list(EYE_CONTOURS[side])]
        width = float(np.linalg.norm(points[EYE_CORNERS[2 * side + 1]]
                                     - points[EYE_CORNERS[2 * side]]))
        if len(points) >= 478:
            ring = points[list(IRISES[side][1:])]
            radius = float(np.linalg.norm(ring - centre, axis=1).mean())
        else:
            radius = 0.2 * width
        travel = 0.3 * width if axis == 0 else 0.06 * u
        shift = np.zeros(2, np.float32)
        shift[axis] = travel * amount
        eye = _polygon_mask(image.shape[:2], contour, 0.4)
        if eye.max() < 0.5:
            continue
        sigma = max(1.3 * radius, 1.0)
        moved_centre = centre + shift
        bump = np.exp(-((xs - moved_centre[0]) ** 2 + (ys - moved_centre[1]) ** 2)
                      / np.float32(2 * sigma * sigma))
        bump = bump.astype(np.float32)
        warped = cv2.remap(image, xs - shift[0] * bump, ys - shift[1] * bump,
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = out * (1 - eye[..., None]) + warped.astype(np.float32) * eye[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def warp_face(image: np.ndarray, points: np.ndarray, kind: str, amount: float,
              mouth_inside: MouthInside | None = None) -> np.ndarray:
    """``image`` [S,S,3] uint8 with warp ``kind`` at ``amount``; ``points`` [468,2] (or
    [478,2] with the irises) in it; ``mouth_inside`` the person's own open mouth for the teeth
    (see :func:`find_mouth_inside`), else they are synthesised."""
    import cv2

    if image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square crop, got {image.shape}")
    if kind not in WARPS:
        raise ValueError(f"unknown warp {kind!r}; known: {', '.join(WARPS)}")
    low, high = AMOUNT_RANGE[kind]
    amount = float(np.clip(amount, low, high))
    if amount == 0.0:
        return image.copy()
    size = image.shape[0]
    u = interocular(points)
    if kind in ("gaze_horizontal", "gaze_vertical"):
        return _move_irises(image, points, amount, 0 if kind == "gaze_horizontal" else 1)
    if kind == "roll":
        centre = points[list(EYE_CORNERS) + list(MOUTH_CORNERS)].mean(0)
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])),
                                         -ROLL_DEGREES * amount, 1.0)
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    control = control_points(kind, points, amount, size)
    map_x, map_y = dense_backward_map(control, size, REACH[kind] * u)
    warped = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    moves = mesh_moves(kind, points, amount)
    if kind == "smile":
        part = teeth_amount(amount)
        if part > 0:
            warped = _fill_mouth(warped, moves, 0.5 + 0.5 * part, mouth_inside)
        warped = _shade_folds(warped, moves, amount)
    elif kind == "mouth_open":
        warped = _fill_mouth(warped, moves, 0.35, mouth_inside)
    elif kind == "eyes_closed":
        warped = _cover_eyes(warped, moves)
    return warped


def _cover_eyes(image: np.ndarray, moves: MeshMoves) -> np.ndarray:
    """AU43's appearance: the eye between its open upper lid and where the lid came down is
    covered by lid skin (the skin just above the eye, moved down) — warping alone squashes the
    iris into a dark slit instead of hiding it."""
    import cv2

    p = moves.points
    out = image.astype(np.float32)
    size = image.shape[0]
    for side in (0, 1):
        contour = list(EYE_CONTOURS[side])
        upper = [i for i in contour if i in EYE_UPPER[side]]
        corners = (EYE_CORNERS[2 * side], EYE_CORNERS[2 * side + 1])
        before = np.array([p[corners[0]]] + [p[i] for i in upper] + [p[corners[1]]])
        before = before[np.argsort(before[:, 0])]
        after = np.array([moves.target(i) for i in upper] + [p[corners[0]], p[corners[1]]])
        after = after[np.argsort(after[:, 0])]
        region = np.concatenate([before, after[::-1]])
        mask = _polygon_mask(image.shape[:2], region, 0.4)[..., None]
        drop = float(np.mean([moves.target(i)[1] - p[i, 1] for i in upper]))
        lift = drop + 0.03 * interocular(p)
        matrix = np.float32([[1, 0, 0], [0, 1, lift]])
        skin = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        out = out * (1 - mask) + skin * mask
    return np.clip(out, 0, 255).astype(np.uint8)


#: The one-line scale every attribute's strength follows (``--help``, ``--list-attrs``).
STRENGTH_SCALE = ("strength 1 = a clear, everyday amount (a smile anyone would call one), 2 = "
                  "broad, 3 = full (beaming); 0 = the input unchanged; negative = the opposite "
                  "direction")


def attribute_order(names) -> list[str]:
    """``names`` with the expression edits first, in :data:`WARPS` order (``eyes_open`` after
    ``eyes_closed``), then the rest (SeFa, files) sorted."""
    order = [kind for kind in WARPS for kind in ((kind, "eyes_open") if kind == "eyes_closed"
                                                 else (kind,))]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def describe_attributes(names) -> list[str]:
    """One line per attribute, in :func:`attribute_order`, with what its strengths mean."""
    return [f"{name:<16} {MEANING[name]}" if name in MEANING else name
            for name in attribute_order(names)]
