"""Expression warps of aligned face crops built on facial action units (FACS): training data in
which the attributes to be edited actually vary.

A clip of someone talking rarely holds a smile, a frown, closed eyes or a turned head, so a
model trained on it has nothing to learn those edits from. Each warp here is one expression of
the face-editor set, written as the action units (AU) that make it, and moves MediaPipe
face-mesh points by anatomical amounts in inter-ocular distances (u). ``amount`` 1 is the full
expression (strength 3 of the model's edit: "beaming" for a smile); 1/3 and 2/3 are strengths 1
("a clear smile") and 2 ("broad"). Signed warps (gaze, head turn) run over [-1, 1].

- smile: AU12 — the mouth corners pulled up and back along the line to the cheekbone (0.25 u up,
  0.12 u out at full), the upper and lower lip following smoothly (their middles too); AU6 —
  cheeks raised, lower lids pushed up, eyes narrowed; from about strength 1.5 AU25 — the lips
  part and the upper teeth show (the person's own teeth where the clip has a frame with them,
  else a synthesised band) — and the nasolabial folds deepen (a soft shading nose wing →
  mouth corner).
- frown: AU15 (lip corners down) + AU4 (brows lowered and drawn together).
- brows_raised: AU1+2 (inner and outer brows up). eyes_closed: AU43. eyes_wide: AU5 (upper lids
  up). mouth_open: AU26/27 (the jaw drops, the inside of the mouth and the upper teeth show).
  pout: AU18 (lips pushed together and forward: narrower, rounder).
- gaze_horizontal / gaze_vertical: the iris moved inside the eye opening (MediaPipe's refined
  iris points 468–477 when given, else the eye contour's centre) by a smooth displacement bump
  around it, the sclera squeezed on one side and stretched on the other, the lids unmoved.
- yaw, pitch: approximate head turns (the face's centre line moves against the outline);
  roll: a rotation of the crop about the face's centre.

The displacements of the control points are interpolated exactly (a Gaussian radial basis
solved so that every control point lands where its AU puts it — nothing averages a moving point
with fixed ones nearby) into a dense backward map, and the crop is resampled. These warps only
make training data for ``vidinv personalize``; at edit time the motion comes from the model.

Points are [468,2] or [478,2] float (x, y) in crop pixels (MediaPipe's face mesh order; the last
10 are the refined iris points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: MediaPipe face-mesh indices.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_OUTER = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[1:-1]
MOUTH_CORNERS = (61, 291)
#: Skin just above the upper lip and below the lower lip (moves with the lips, less).
ABOVE_LIP = (164, 167, 393, 165, 391, 92, 322, 186, 410)
BELOW_LIP = (18, 83, 313, 182, 406, 106, 335)
BESIDE_CORNERS = (57, 287, 43, 273, 202, 422)
CHEEKS = (205, 425, 50, 280, 187, 411, 123, 352, 117, 346, 118, 347, 101, 330, 36, 266)
NOSE_WINGS = (129, 358)
NOSE = (1, 4, 5, 195, 197, 6, 98, 327, 64, 294, 48, 278)
CHIN = (152, 148, 377, 176, 400, 175, 199, 200)
EYE_UPPER = ((159, 158, 160, 157, 161), (386, 385, 387, 384, 388))
EYE_LOWER = ((145, 144, 153, 154, 163), (374, 373, 380, 381, 390))
EYE_CORNERS = (33, 133, 362, 263)
#: The ring of skin under each lower lid.
UNDER_EYES = ((230, 229, 228, 231, 22, 23, 24, 110), (450, 449, 448, 451, 252, 253, 254, 339))
#: Each eye's opening as a closed contour.
EYE_CONTOURS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
#: Brows: (upper edge, lower edge) per side, inner end last.
BROWS_SIDES = (((70, 63, 105, 66, 107), (46, 53, 52, 65, 55)),
               ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285)))
BROWS = tuple(i for side in BROWS_SIDES for edge in side for i in edge)
#: Upper-lid skin between lid and brow.
LID_FOLDS = ((27, 28, 29, 30, 56, 221, 222, 223, 224, 225),
             (257, 258, 259, 260, 286, 441, 442, 443, 444, 445))
FOREHEAD = (10, 151, 109, 67, 103, 338, 297, 332, 108, 337, 69, 299, 9)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)
CENTRE_LINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199,
               175, 152)
NOSE_TIP = 1
#: Refined iris points (centre first) per eye, in the order of :data:`EYE_CONTOURS`.
IRISES = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))

#: The warps and the range of their ``amount``.
WARPS = ("smile", "frown", "brows_raised", "eyes_closed", "eyes_wide", "mouth_open", "pout",
         "gaze_horizontal", "gaze_vertical", "yaw", "pitch", "roll")
SIGNED = ("gaze_horizontal", "gaze_vertical", "yaw", "pitch", "roll")
AMOUNT_RANGE = {kind: ((-1.0, 1.0) if kind in SIGNED else (0.0, 1.0)) for kind in WARPS}
#: How far one control point's motion reaches (Gaussian σ), in inter-ocular distances.
REACH = {"smile": 0.16, "frown": 0.14, "brows_raised": 0.14, "eyes_closed": 0.05,
         "eyes_wide": 0.05, "mouth_open": 0.16, "pout": 0.12, "gaze_horizontal": 0.1,
         "gaze_vertical": 0.1, "yaw": 0.3, "pitch": 0.3, "roll": 0.3}
#: The model's edit name for each warp and the sign that maps the warp onto it.
EDIT_OF_WARP = {kind: (kind, 1.0) for kind in WARPS}
#: Further edits that are another warp's direction with a sign (eyes_open = −eyes_closed).
EXTRA_EDITS = {"eyes_open": ("eyes_closed", -1.0)}
_LIPS = tuple(set(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER))
_LIDS = tuple(i for s in (0, 1) for i in EYE_UPPER[s] + EYE_LOWER[s])
#: The control points of each warp that land exactly where their action unit puts them.
EXACT = {"smile": _LIPS, "frown": _LIPS + BROWS, "brows_raised": BROWS,
         "eyes_closed": _LIDS + LID_FOLDS[0] + LID_FOLDS[1], "eyes_wide": _LIDS,
         "mouth_open": _LIPS, "pout": _LIPS}
#: What strength 1 / 2 / 3 of each edit means (the full warp is strength 3).
MEANING = {
    "smile": "1 a clear smile, 2 broad (upper teeth start to show), 3 beaming",
    "frown": "lip corners down and brows lowered and drawn together; 3 = a strong frown",
    "brows_raised": "inner and outer brows up; 3 = surprised",
    "eyes_closed": "upper lids down; 3 = shut", "eyes_open": "the opposite of eyes_closed",
    "eyes_wide": "upper lids up; 3 = wide-eyed",
    "mouth_open": "the jaw drops; 3 = wide open",
    "pout": "lips pushed together and forward; 3 = a full pout",
    "gaze_horizontal": "irises to the image's right (negative: left); 3 = eye corner",
    "gaze_vertical": "irises down (negative: up)",
    "yaw": "head turned towards the image's right (negative: left); 3 ≈ 20°",
    "pitch": "chin down (negative: up); 3 ≈ 15°",
    "roll": "head tilted clockwise in the image (negative: anticlockwise); 3 = 15°"}

#: Full-warp amounts, in inter-ocular distances (u) unless said.
SMILE_RISE, SMILE_OUT = 0.25, 0.12
TEETH_FROM = 0.45            # smile amount from which the lips part (AU25)
#: Smile motion grows as amount ** SMILE_CURVE (strength 1 = 55 %, 2 = 80 % of beaming).
SMILE_CURVE = 0.55
TOOTH_HEIGHT = 0.10          # the upper teeth's visible height at most
ROLL_DEGREES = 15.0


@dataclass(frozen=True)
class ControlPoints:
    """Where control points are (``source`` [K,2]) and where the warp puts them (``target``);
    ``exact`` [K] bool marks the ones that must land exactly (the lips), None: none."""

    source: np.ndarray
    target: np.ndarray
    exact: np.ndarray | None = None


def interocular(points: np.ndarray) -> float:
    """The distance between the eyes' centres of a landmark set, in pixels."""
    left, right = eye_centres(points)
    return float(np.linalg.norm(right - left))


_unit = interocular


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return tuple(points[list(EYE_UPPER[s] + EYE_LOWER[s])].mean(0) for s in (0, 1))


def iris_centres(points: np.ndarray) -> list[np.ndarray]:
    """Each eye's iris centre: the refined iris point where given, else the eye's centre."""
    if len(points) >= 478:
        return [points[IRISES[s][0]] for s in (0, 1)]
    return list(eye_centres(points))


def _border(size: int, per_side: int = 6) -> np.ndarray:
    edge = np.linspace(0, size - 1, per_side)
    top = np.stack([edge, np.zeros_like(edge)], 1)
    bottom = np.stack([edge, np.full_like(edge, size - 1)], 1)
    left = np.stack([np.zeros_like(edge), edge], 1)
    right = np.stack([np.full_like(edge, size - 1), edge], 1)
    return np.concatenate([top, bottom, left, right])


class _Moves:
    """Displacements of mesh points (``set``) and extra fixed anchors (``fix``)."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points
        self.shift: dict[int, np.ndarray] = {}

    def set(self, index: int, dx: float, dy: float) -> None:
        self.shift[int(index)] = np.array([dx, dy], np.float64)

    def fix(self, indices) -> None:
        for i in indices:
            self.shift.setdefault(int(i), np.zeros(2))

    def target(self, index: int) -> np.ndarray:
        return self.points[index] + self.shift.get(index, np.zeros(2))


def _lip_profile(points: np.ndarray, index: int) -> float:
    """Where a point is across the mouth: −1 at the left corner, 0 mid, 1 at the right."""
    left, right = points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]
    axis = right - left
    return float(np.clip(2 * np.dot(points[index] - left, axis) / np.dot(axis, axis) - 1, -1, 1))


def teeth_amount(amount: float) -> float:
    """How far the lips part (0…1) at smile ``amount`` (AU25 from :data:`TEETH_FROM`)."""
    return float(np.clip((amount - TEETH_FROM) / (1 - TEETH_FROM), 0, 1))


def _smile(m: _Moves, u: float, amount: float) -> None:
    p = m.points
    part = teeth_amount(amount)
    a = amount ** SMILE_CURVE        # strength 1 already a clear smile
    for i in set(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER):
        t = _lip_profile(p, i)
        rise = SMILE_RISE * t * t + 0.03          # corners most, the middle a little
        dy = -rise * u * a
        if i in LIPS_INNER_LOWER[1:-1] or i in LIPS_OUTER_LOWER[1:-1]:
            # AU25: the lower lip drops away from the upper teeth, most in the middle.
            dy += 0.10 * u * part * (1 - t * t)
            dy += 0.02 * u * a
        if i in LIPS_INNER_UPPER[1:-1]:
            dy -= 0.02 * u * part * (1 - t * t)  # the upper lip lifts off the teeth
        m.set(i, SMILE_OUT * u * a * t, dy)
    for i in ABOVE_LIP + BELOW_LIP + BESIDE_CORNERS:
        t = _lip_profile(p, i)
        below = i in BELOW_LIP
        m.set(i, 0.6 * SMILE_OUT * u * a * t,
              -u * a * (0.45 * SMILE_RISE * t * t + (0.0 if below else 0.015))
              + (0.06 * u * part * (1 - t * t) if below else 0.0))
    # AU6: cheeks up, the skin under the eyes and the lower lids pushed up (eyes narrow).
    for i in CHEEKS:
        near_mouth = i in (205, 425, 187, 411)   # the cheek mass the corner pushes into
        m.set(i, 0.03 * u * a * np.sign(p[i, 0] - p[NOSE_TIP, 0]) * near_mouth,
              -(0.12 if near_mouth else 0.09) * u * a)
    for side in (0, 1):
        for i in UNDER_EYES[side]:
            m.set(i, 0.0, -0.08 * u * a)
        for i in EYE_LOWER[side]:
            m.set(i, 0.0, -0.075 * u * a)
        for i in EYE_UPPER[side]:
            m.set(i, 0.0, 0.025 * u * a)
    m.fix(CHIN + BROWS + EYE_CORNERS + NOSE)


def _frown(m: _Moves, u: float, a: float) -> None:
    p = m.points
    for i in set(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER):  # AU15
        t = _lip_profile(p, i)
        m.set(i, -0.02 * u * a * t, 0.13 * u * a * t * t)
    for i in BESIDE_CORNERS:
        t = _lip_profile(p, i)
        m.set(i, 0.0, 0.08 * u * a * t * t)
    centre_x = 0.5 * (p[EYE_CORNERS[1], 0] + p[EYE_CORNERS[2], 0])
    for side in (0, 1):                                               # AU4
        inward = 1.0 if side == 0 else -1.0
        for edge in BROWS_SIDES[side]:
            for k, i in enumerate(edge):
                inner = k / (len(edge) - 1)           # 0 at the outer end, 1 at the inner
                m.set(i, inward * 0.06 * u * a * inner, (0.04 + 0.07 * inner) * u * a)
        for i in LID_FOLDS[side]:
            m.set(i, inward * 0.02 * u * a, 0.04 * u * a)
    del centre_x
    m.fix(EYE_CORNERS + tuple(i for s in (0, 1) for i in EYE_UPPER[s] + EYE_LOWER[s])
          + NOSE + CHIN + FOREHEAD)


def _brows_raised(m: _Moves, u: float, a: float) -> None:
    for side in (0, 1):                                               # AU1 + AU2
        for edge in BROWS_SIDES[side]:
            for k, i in enumerate(edge):
                inner = k / (len(edge) - 1)
                m.set(i, 0.0, -(0.17 + 0.03 * inner) * u * a)
        for i in LID_FOLDS[side]:
            m.set(i, 0.0, -0.09 * u * a)
        for i in EYE_UPPER[side]:
            m.set(i, 0.0, -0.012 * u * a)
    m.fix(EYE_CORNERS + tuple(i for s in (0, 1) for i in EYE_LOWER[s]) + NOSE
          + (10, 338, 109, 297, 67))


def _eyes(m: _Moves, u: float, a: float, closed: bool) -> None:
    p = m.points
    for side in (0, 1):
        for i, j in zip(EYE_UPPER[side], EYE_LOWER[side], strict=True):
            gap = p[j] - p[i]
            if closed:                                                 # AU43
                m.set(i, *(0.95 * a * gap))
                m.set(j, 0.0, -0.05 * a * gap[1])
            else:                                                      # AU5
                m.set(i, 0.0, -0.09 * u * a)
                m.set(j, 0.0, 0.02 * u * a)
        for i in UNDER_EYES[side]:
            m.fix((i,))
        # the skin of the upper lid slides down with it (closing) or folds up (AU5)
        opening = float(np.mean([p[j, 1] - p[i, 1] for i, j in
                                 zip(EYE_UPPER[side], EYE_LOWER[side], strict=True)]))
        for i in LID_FOLDS[side]:
            m.set(i, 0.0, (0.8 * opening * a) if closed else -0.03 * u * a)
    m.fix(EYE_CORNERS + BROWS + NOSE + MOUTH_CORNERS)


def _mouth_open(m: _Moves, u: float, a: float) -> None:
    p = m.points
    drop = 0.32 * u * a                                             # AU26/27
    corner_y = p[list(MOUTH_CORNERS), 1].mean()
    chin_y = p[152, 1]
    for i in LIPS_INNER_LOWER[1:-1] + LIPS_OUTER_LOWER[1:-1] + BELOW_LIP + CHIN:
        t = _lip_profile(p, i)
        m.set(i, 0.0, drop * (1 - 0.35 * t * t))
    for i in FACE_OVAL:
        if p[i, 1] > corner_y:
            m.set(i, 0.0, drop * float(np.clip((p[i, 1] - corner_y) / (chin_y - corner_y),
                                               0, 1)) ** 1.5)
    for i in LIPS_INNER_UPPER[1:-1]:
        m.set(i, 0.0, -0.02 * u * a)
    for i in MOUTH_CORNERS:
        m.set(i, 0.0, 0.06 * u * a)
    m.fix(LIPS_OUTER_UPPER + ABOVE_LIP + BROWS + EYE_CORNERS + NOSE)


def _pout(m: _Moves, u: float, a: float) -> None:
    p = m.points
    centre = p[list(MOUTH_CORNERS)].mean(0)
    for i in set(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER):  # AU18
        t = _lip_profile(p, i)
        dx = -0.30 * a * (p[i, 0] - centre[0])        # the mouth narrows towards its centre
        outward = np.sign(p[i, 1] - centre[1])        # lips round out (pushed forward)
        m.set(i, dx, 0.05 * u * a * outward * (1 - t * t))
    for i in ABOVE_LIP + BELOW_LIP + BESIDE_CORNERS:
        m.set(i, -0.15 * a * (p[i, 0] - centre[0]), 0.0)
    m.fix(CHIN + NOSE + EYE_CORNERS + CHEEKS[:4])


def _head(m: _Moves, u: float, a: float, axis: int) -> None:
    """yaw (axis 0) or pitch (axis 1): the centre line moves most at the nose tip, the eyes and
    mouth less, the outline not at all."""
    p = m.points
    nose = p[NOSE_TIP]
    full = 0.35 if axis == 0 else 0.25
    for i in CENTRE_LINE + NOSE:
        closeness = float(np.exp(-np.linalg.norm(p[i] - nose) ** 2 / (0.8 * u) ** 2))
        shift = np.zeros(2)
        shift[axis] = full * u * a * closeness
        m.set(i, *shift)
    for i in EYE_CORNERS + MOUTH_CORNERS + tuple(b for b in BROWS[::3]):
        shift = np.zeros(2)
        shift[axis] = 0.15 * u * a * (1.0 if axis == 0 else 0.7)
        m.set(i, *shift)


def control_points(kind: str, points: np.ndarray, amount: float, size: int) -> ControlPoints:
    """The control points of warp ``kind`` at ``amount`` for landmarks ``points`` [468,2]."""
    if kind not in WARPS:
        raise ValueError(f"unknown warp {kind!r}; known: {', '.join(WARPS)}")
    moves = mesh_moves(kind, points, amount)
    keep_oval = kind != "mouth_open"
    moves.fix(FACE_OVAL if keep_oval else ())
    source = [points[i] for i in moves.shift]
    target = [points[i] + d for i, d in moves.shift.items()]
    exact = [i in EXACT.get(kind, ()) for i in moves.shift]
    border = _border(size)
    source = np.concatenate([np.array(source, np.float64).reshape(-1, 2), border])
    target = np.concatenate([np.array(target, np.float64).reshape(-1, 2), border])
    exact_a = np.concatenate([np.array(exact, bool), np.zeros(len(border), bool)])
    return ControlPoints(source=source, target=target, exact=exact_a)


def mesh_moves(kind: str, points: np.ndarray, amount: float) -> _Moves:
    """Where warp ``kind`` at ``amount`` moves the mesh points (a map index -> shift)."""
    u = interocular(points)
    moves = _Moves(points)
    if kind == "smile":
        _smile(moves, u, amount)
    elif kind == "frown":
        _frown(moves, u, amount)
    elif kind == "brows_raised":
        _brows_raised(moves, u, amount)
    elif kind in ("eyes_closed", "eyes_wide"):
        _eyes(moves, u, amount, closed=kind == "eyes_closed")
    elif kind == "mouth_open":
        _mouth_open(moves, u, amount)
    elif kind == "pout":
        _pout(moves, u, amount)
    elif kind in ("yaw", "pitch"):
        _head(moves, u, amount, 0 if kind == "yaw" else 1)
    return moves


def dense_backward_map(control: ControlPoints, size: int, sigma: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) [size,size] float32 for ``cv2.remap``: output pixel -> source pixel.

    Two passes over the backward displacements (source − target) at the targets: a normalised
    Gaussian spread of width ``sigma`` (pixels; smooth, never overshoots, fades to zero away
    from the points — but it averages each point's motion with its neighbours'), then an exact
    correction of what that pass left at each ``exact`` control point (the lips, lids or
    brows the warp is about) — a Gaussian radial basis of width σ/2 solved so that those points
    land where they are sent (points closer than σ/5 to one that moves more are dropped). So a
    mouth corner moves as far as its action unit says, not the mean of it and the fixed points
    near it. Evaluated on a lattice finer than σ/2 and
    bilinearly upsampled.
    """
    import cv2

    target, shift, exact = [], [], []
    merge = max(sigma / 5, 0.5)
    moves = control.source - control.target
    wanted = (control.exact if control.exact is not None
              else np.zeros(len(moves), bool))
    order = np.argsort(-np.linalg.norm(moves, axis=1), kind="stable")  # moving points first
    for t, s, e in zip(control.target[order], moves[order], wanted[order], strict=True):
        if target and np.min(np.linalg.norm(np.array(target) - t, axis=1)) < merge:
            continue
        target.append(t)
        shift.append(s)
        exact.append(e)
    target_a = np.array(target, np.float64)
    shift_a = np.array(shift, np.float64)
    exact_a = np.array(exact, bool)

    def squared(at: np.ndarray, points: np.ndarray) -> np.ndarray:
        """[A,P] squared distances (float32)."""
        at, points = at.astype(np.float32), points.astype(np.float32)
        return np.maximum((at ** 2).sum(1)[:, None] + (points ** 2).sum(1)[None]
                          - 2.0 * at @ points.T, 0)

    def spread(at: np.ndarray) -> np.ndarray:
        weights = np.exp(-squared(at, target_a) / np.float32(2 * sigma * sigma))
        return (weights @ shift_a.astype(np.float32)) / (weights.sum(1, keepdims=True) + 1e-2)

    narrow = 2 * (sigma / 2) ** 2
    anchors = target_a[exact_a]
    gram = np.exp(-((anchors[:, None] - anchors[None]) ** 2).sum(-1) / narrow)
    coeffs = np.linalg.solve(gram + 1e-3 * np.eye(len(anchors)),
                             shift_a[exact_a] - spread(anchors))
    grid = int(min(size, max(16, np.ceil(3 * size / max(sigma, 1e-6)))))
    axis = np.linspace(0, size - 1, grid)
    gx, gy = np.meshgrid(axis, axis)
    lattice = np.stack([gx.ravel(), gy.ravel()], 1)
    field = spread(lattice) + np.exp(-squared(lattice, anchors) / np.float32(narrow)) @ (
        coeffs.astype(np.float32))
    field = cv2.resize(field.reshape(grid, grid, 2).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return xs + field[..., 0], ys + field[..., 1]


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


def mouth_gap(moves: _Moves) -> np.ndarray:
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


def _fill_mouth(image: np.ndarray, moves: _Moves, teeth: float,
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


def _shade_folds(image: np.ndarray, moves: _Moves, depth: float) -> np.ndarray:
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


def _cover_eyes(image: np.ndarray, moves: _Moves) -> np.ndarray:
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


def moved_points(kind: str, points: np.ndarray, amount: float) -> np.ndarray:
    """[P,2]: where warp ``kind`` at ``amount`` puts each mesh point it controls (the others
    unchanged); for checks of the warps' own geometry."""
    out = points.astype(np.float64).copy()
    for i, shift in mesh_moves(kind, points, amount).shift.items():
        out[i] = points[i] + shift
    return out


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
