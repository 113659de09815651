"""Expression warps of aligned face crops: training data in which the attributes to be edited
actually vary.

A clip of someone talking rarely holds a smile, a frown, closed eyes or a turned head, so a
model trained on it has nothing to learn those edits from. ``vidinv personalize`` warps the
person's own frames with the expression bank's action units (:mod:`vidinv.face.expressions`:
where each AU moves the face-mesh points, and the dense field they drive) and adds here what
motion cannot make: for the smile the upper teeth between parted lips and deeper nasolabial
folds, the inside of an opened mouth (drawn by :mod:`vidinv.face.appearance`, which the
transfer paste draws them with too); the lid skin that covers a
closed eye; the irises moved inside the eye opening for gaze (a smooth displacement bump
around them, the sclera squeezed on one side and stretched on the other, the lids unmoved).

Points are [468,2] or [478,2] float (x, y) in crop pixels (MediaPipe's face mesh order; the last
10 are the refined iris points).
"""

from __future__ import annotations

import numpy as np

from vidinv.face.appearance import (
    MouthInside,
    fill_mouth,
    shade_folds,
    teeth_of,
)
from vidinv.face.expressions import (
    AMOUNT_RANGE,
    EYE_CONTOURS,
    EYE_CORNERS,
    EYE_UPPER,
    GAZE_KINDS,
    MEANING,
    MOUTH_CORNERS,
    REACH,
    ROLL_DEGREES,
    WARPS,
    MeshMoves,
    action_field,
    control_points,
    dense_backward_map,
    interocular,
    mesh_moves,
    polygon_mask,
)


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
    if kind in GAZE_KINDS:
        # the irises moved inside the eye openings: the field the transfer paste applies too
        field = action_field(kind, points, amount, size)
        xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
        return cv2.remap(image, xs + field[..., 0], ys + field[..., 1],
                         interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
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
    teeth = teeth_of({kind: amount})
    if teeth > 0:
        warped = fill_mouth(warped, moves, teeth, mouth_inside)
    if kind == "smile":
        warped = shade_folds(warped, moves, amount)
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
        mask = polygon_mask(image.shape[:2], region, 0.4)[..., None]
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
