"""What an expression shows that no motion of the face's own pixels can make: the upper teeth
and the dark inside of a mouth whose lips part (a broad smile's AU25, an opened jaw), and the
nasolabial folds a smile deepens.

Two users, one drawing: ``vidinv personalize`` paints them into the warped frames it trains on
(:mod:`vidinv.personalize.warps`), and the transfer paste paints a smile's teeth and folds into
the output frame (:func:`expression_paint`), in the output's own geometry and at the paste's
resolution — the model's render of them (a 64-px model's teeth are a bluish blur) is never
pasted, and a face the model does not know gets them too, since they are drawn from its own
landmarks and skin.

The teeth are the person's own where a clip shows them (:func:`find_mouth_inside`: the frame
whose inner lips are farthest apart among those whose teeth show), else synthesised: a
light band under the upper lip, as tall as :data:`~vidinv.face.expressions.TOOTH_HEIGHT` ×
how far the lips part, shaded toward the corners and away from the lip, the skin's brightness
lifted, dark below.

Shapes: crops [S,S,3] uint8 RGB; points [468+,2] float (x, y) in crop pixels (MediaPipe's face
mesh order); masks [S,S] float32 in [0,1]; a paint layer [S,S,4] float32: RGB premultiplied by
its alpha (0…255), then the alpha (0…1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidinv.face.expressions import (
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    MOUTH_CORNERS,
    NOSE_TIP,
    NOSE_WINGS,
    TOOTH_HEIGHT,
    MeshMoves,
    interocular,
    mesh_moves,
    polygon_mask,
    teeth_amount,
)

#: The mesh point whose skin (the philtrum, above the upper lip) sets the teeth's brightness.
PHILTRUM = 164
#: The mouth's inside below the teeth (RGB).
MOUTH_DARK = (38.0, 18.0, 20.0)
#: How far the teeth fill the opening of an opened jaw (a smile's follow its lips' parting).
OPEN_JAW_TEETH = 0.35
#: The most a smile's folds darken the skin along them (× the smile's amount).
FOLD_DARKENING = 0.10


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


def find_mouth_inside(crops: np.ndarray, points: np.ndarray, min_gap: float = 0.08
                      ) -> MouthInside | None:
    """The inside of the mouth of the crop whose inner lips are farthest apart (≥ ``min_gap``
    u) among those whose teeth show (:func:`own_teeth_showing` ≥ 1/2: the opening lighter
    than the skin above the lip); None when no frame has them."""
    best, best_gap = None, min_gap
    for crop, p in zip(crops, points, strict=True):
        gap = lips_apart(p)
        if gap > best_gap and own_teeth_showing(crop, p) >= 0.5:
            best, best_gap = (crop, p), gap
    if best is None:
        return None
    crop, p = best
    x0, x1 = int(np.floor(p[78, 0])), int(np.ceil(p[308, 0])) + 1
    y0 = int(np.floor(p[list(LIPS_INNER_UPPER), 1].min()))
    y1 = int(np.ceil(p[list(LIPS_INNER_LOWER), 1].max())) + 1
    if x1 - x0 < 4 or y1 - y0 < 3:
        return None
    return MouthInside(image=crop[y0:y1, x0:x1].copy())


def mouth_fill(image: np.ndarray, moves: MeshMoves, teeth: float,
               inside: MouthInside | None
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]] | None:
    """What fills the opening between the moved inner lips of ``image`` [S,S,3] uint8 (the
    crop after the motion): (fill [h,w,3] float32, alpha [h,w] float32, box (x0, y0, x1, y1)),
    or None where the lips do not part. The fill is the person's own mouth inside when given,
    else upper teeth as a light, slightly shaded band under the upper lip (``teeth`` 0…1: how
    much of the opening they fill), dark below (the crop's own pixels where they are darker)."""
    import cv2

    polygon = mouth_gap(moves)
    size = image.shape[0]
    mask = polygon_mask(image.shape[:2], polygon, max(0.5, size / 256))
    if mask.max() < 0.05:
        return None
    x0, y0 = np.floor(polygon.min(0)).astype(int)
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    if inside is not None:
        fill = cv2.resize(inside.image, (x1 - x0, y1 - y0),
                          interpolation=cv2.INTER_CUBIC).astype(np.float32)
    else:
        philtrum = moves.target(PHILTRUM)
        skin = image[int(philtrum[1]) - 1:int(philtrum[1]) + 2,
                     int(philtrum[0]) - 1:int(philtrum[0]) + 2].reshape(-1, 3)
        bright = float(np.clip(skin.mean() * 1.15 if len(skin) else 200, 150, 235))
        tooth = np.array([bright, bright * 0.96, bright * 0.88], np.float32)
        dark = np.array(MOUTH_DARK, np.float32)
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
    return fill, mask[y0:y1, x0:x1], (int(x0), int(y0), int(x1), int(y1))


def fill_mouth(image: np.ndarray, moves: MeshMoves, teeth: float,
               inside: MouthInside | None) -> np.ndarray:
    """``image`` [S,S,3] uint8 with the opening between the moved inner lips painted
    (:func:`mouth_fill`)."""
    filled = mouth_fill(image, moves, teeth, inside)
    if filled is None:
        return image
    fill, alpha, (x0, y0, x1, y1) = filled
    region = image[y0:y1, x0:x1].astype(np.float32)
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(region * (1 - alpha[..., None]) + fill * alpha[..., None], 0,
                                255).astype(np.uint8)
    return out


def fold_darkening(size: int, moves: MeshMoves, depth: float) -> np.ndarray:
    """[S,S] float32: how much a smile of amount ``depth`` darkens the skin along its
    nasolabial folds (0…:data:`FOLD_DARKENING` × depth): a soft line from each nose wing to
    just outside the (moved) mouth corner."""
    import cv2

    u = interocular(moves.points)
    line = np.zeros((size, size), np.float32)
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
    return (FOLD_DARKENING * depth * line).astype(np.float32)


def shade_folds(image: np.ndarray, moves: MeshMoves, depth: float) -> np.ndarray:
    """``image`` [S,S,3] uint8 with a smile's folds deepened (:func:`fold_darkening`)."""
    dark = 1 - fold_darkening(image.shape[0], moves, depth)[..., None]
    return np.clip(image.astype(np.float32) * dark, 0, 255).astype(np.uint8)


def teeth_of(actions: dict[str, float]) -> float:
    """How far the teeth fill a parted mouth for ``actions`` (kind → amount; 0: the lips do not
    part): a smile's from half to all of the band as its lips part
    (:func:`~vidinv.face.expressions.teeth_amount`), an opened jaw's :data:`OPEN_JAW_TEETH`."""
    part = teeth_amount(actions["smile"]) if "smile" in actions else 0.0
    teeth = 0.5 + 0.5 * part if part > 0 else 0.0
    if actions.get("mouth_open", 0.0) > 0:
        teeth = max(teeth, OPEN_JAW_TEETH)
    return teeth


def combined_moves(points: np.ndarray, actions: dict[str, float],
                   scales: list[float] | None = None) -> MeshMoves:
    """One :class:`MeshMoves` for several expressions at once: each kind's point shifts at its
    amount (``actions``: kind → amount), times its ``scales`` entry (how far the model's edit
    goes along it; 1 each when None), summed."""
    moves = MeshMoves(points)
    factors = [1.0] * len(actions) if scales is None else list(scales)
    for (kind, amount), factor in zip(actions.items(), factors, strict=True):
        for index, shift in mesh_moves(kind, points, amount).shift.items():
            moves.shift[index] = moves.shift.get(index, np.zeros(2)) + factor * shift
    return moves


#: How far apart (inter-ocular units, the middle of the inner lips) the crop's own lips must be
#: for the output to keep the inside of its mouth where the motion shows it (ramping from 0 at
#: the first to 1 at the second): a shouting mouth is a view of its own teeth and tongue; the
#: 2–3 px dark line between a talking mouth's lips, stretched into a parted smile, is not.
OWN_OPENING = (0.12, 0.25)


def lips_apart(points: np.ndarray) -> float:
    """How far apart the inner lips are in their middle, in inter-ocular units."""
    return float(np.mean([points[j, 1] - points[i, 1] for i, j in
                          zip(LIPS_INNER_UPPER[3:8], LIPS_INNER_LOWER[3:8], strict=True)])
                 ) / interocular(points)


#: How bright the crop's own opening is, × the skin above the upper lip (the 75th percentile
#: between the inner lips), for its teeth to count as showing (0 at the first, 1 at the second):
#: teeth are lighter than skin; the dark line between closed lips is not (the real clip's
#: frames 0.44–0.96, the astronaut's smile 1.2).
TEETH_SHOWING = (1.0, 1.1)


def own_opening(points: np.ndarray, size: int) -> np.ndarray:
    """[S,S] float32: the opening between the inner lips of the crop whose landmarks are
    ``points``, as they are."""
    return polygon_mask((size, size), mouth_gap(MeshMoves(points)), 0.0)


def own_teeth_showing(crop: np.ndarray, points: np.ndarray,
                      opening: np.ndarray | None = None) -> float:
    """0…1: whether the crop [S,S,3] uint8 already shows teeth between its inner lips
    (:data:`TEETH_SHOWING`); ``opening`` is :func:`own_opening`, when already made."""
    if opening is None:
        opening = own_opening(points, crop.shape[0])
    opening = opening > 0.5
    if opening.sum() < 6:
        return 0.0
    grey = crop.astype(np.float32).mean(axis=2)
    x, y = np.round(points[PHILTRUM]).astype(int)
    skin = grey[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
    if skin.size == 0 or skin.mean() <= 0:
        return 0.0
    low, high = TEETH_SHOWING
    ratio = float(np.percentile(grey[opening], 75)) / float(skin.mean())
    return float(np.clip((ratio - low) / (high - low), 0.0, 1.0))


def own_opening_shown(crop: np.ndarray, points: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """[S,S] float32 in [0,1]: where the output — the crop [S,S,3] moved by the backward
    ``flow`` [S,S,2] — shows the inside of the crop's own mouth (between its inner lips, whose
    landmarks are in ``points``), weighted by how much that inside is a view of its own: a
    mouth held open (:data:`OWN_OPENING`) or one whose teeth show already
    (:func:`own_teeth_showing`: a face that smiles with its teeth keeps them)."""
    import cv2

    low, high = OWN_OPENING
    size = flow.shape[0]
    own = own_opening(points, size)
    own_weight = max(float(np.clip((lips_apart(points) - low) / (high - low), 0.0, 1.0)),
                     own_teeth_showing(crop, points, own))
    if own_weight == 0.0:
        return np.zeros((size, size), np.float32)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    shown = cv2.remap(own, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (shown * np.float32(own_weight)).astype(np.float32)


def expression_paint(crop: np.ndarray, points: np.ndarray, actions: dict[str, float],
                     scales: list[float], flow: np.ndarray,
                     inside: MouthInside | None = None) -> np.ndarray | None:
    """The paint layer [S,S,4] (premultiplied RGB, alpha) of what ``actions`` (kind → amount)
    show beyond motion, on the crop ``crop`` [S,S,3] uint8 whose landmarks are ``points``,
    moved by the backward ``flow`` [S,S,2] (the output's pixel p is the crop's at p + flow(p))
    made of those expressions' fields times ``scales``; None when there is nothing to paint.

    A smile's parted lips are painted except where the output shows the crop's own open mouth
    (:func:`own_opening_shown`: a shouting frame, or a smile that shows its teeth already,
    keeps its own; a closed mouth gets them where its lips part), and the folds darken by the
    smile's amount times its scale."""
    import cv2

    size = crop.shape[0]
    moves = combined_moves(points, actions, scales)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    paint = np.zeros((size, size, 4), np.float32)
    # A smile's teeth only: an opened jaw keeps its motion alone (drawn, its dark inside made
    # dlib read the held-out mouths as less open: lip gap +0.05 against +0.12 inter-ocular at
    # strength 3, the stretched lips reading as an open mouth already).
    teeth = teeth_of({"smile": actions["smile"]}) if "smile" in actions else 0.0
    if teeth > 0:
        moved = cv2.remap(crop, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        filled = mouth_fill(moved, moves, teeth, inside)
        if filled is not None:
            fill, alpha, (x0, y0, x1, y1) = filled
            alpha = alpha * (1.0 - own_opening_shown(crop, points, flow)[y0:y1, x0:x1])
            paint[y0:y1, x0:x1, :3] = fill * alpha[..., None]
            paint[y0:y1, x0:x1, 3] = alpha
    if "smile" in actions:
        smile = actions["smile"] * list(scales)[list(actions).index("smile")]
        dark = fold_darkening(size, moves, smile)
        paint[..., 3] = paint[..., 3] + dark * (1.0 - paint[..., 3])   # under the teeth
    if not paint[..., 3].any():
        return None
    return paint
