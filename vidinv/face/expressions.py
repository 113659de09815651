"""The expression bank's geometry: each attribute of the face-editor set as the facial action
units (FACS) that make it, written as motions of MediaPipe face-mesh points in inter-ocular
distances (u), and the dense motion field those points drive.

``amount`` 1 is the full expression (strength 3 of the model's edit: "beaming" for a smile);
1/3 and 2/3 are strengths 1 ("a clear smile") and 2 ("broad"). Signed kinds (gaze, head turn)
run over [-1, 1].

- smile: AU12 — the mouth corners pulled up and back along the line to the cheekbone (0.25 u up,
  0.12 u out at full), the upper and lower lip following smoothly (their middles too); AU6 —
  cheeks raised, lower lids pushed up, eyes narrowed; from about strength 1.5 AU25 — the lips
  part (the teeth they show are drawn by :mod:`vidinv.face.appearance`).
- frown: AU15 (lip corners down) + AU4 (brows lowered and drawn together).
- brows_raised: AU1+2 (inner and outer brows up). eyes_closed: AU43. eyes_wide: AU5 (upper lids
  up). mouth_open: AU26/27 (the jaw drops). pout: AU18 (lips pushed together and forward).
- gaze_horizontal / gaze_vertical: the iris moved inside the eye opening (:func:`iris_moves`),
  and for a vertical gaze the lids following it (:data:`GAZE_LIDS`); yaw, pitch: approximate
  head turns (the face's centre line moves against the outline); roll: a rotation about the
  face's centre.

The control points' displacements are interpolated exactly (a Gaussian radial basis solved so
that every control point lands where its AU puts it — nothing averages a moving point with
fixed ones nearby) into a dense backward map (:func:`dense_backward_map`, :func:`action_field`).
Two users: ``vidinv personalize`` warps the person's frames with it to make training data
(:mod:`vidinv.personalize.warps`), and the transfer paste reads the model's edit as these
motions (:func:`vidinv.face.transfer.fit_actions`).

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
#: The gaze kinds: the irises moved inside the eye openings (:func:`iris_moves`).
GAZE_KINDS = ("gaze_horizontal", "gaze_vertical")
SIGNED = (*GAZE_KINDS, "yaw", "pitch", "roll")
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
         "mouth_open": _LIPS, "pout": _LIPS, "gaze_vertical": _LIDS}
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
    "gaze_vertical": "irises down, the upper lids following (negative: up)",
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


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray, blur: float) -> np.ndarray:
    """[h,w] float32 in [0,1]: ``polygon`` [K,2] filled with sub-pixel edges, blurred by σ
    ``blur`` pixels (0: none)."""
    import cv2

    scale = 4  # sub-pixel polygon edges
    big = np.zeros((shape[0] * scale, shape[1] * scale), np.uint8)
    cv2.fillPoly(big, [np.round(polygon * scale).astype(np.int32)], 255)
    mask = cv2.resize(big, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) / 255.0
    if blur > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    return mask.astype(np.float32)


#: How far a gaze at amount 1 moves each iris: across, × the eye's width (corner to corner);
#: up or down, × the inter-ocular distance.
GAZE_TRAVEL = (0.3, 0.06)
#: How far the lids follow a vertical gaze, × the iris's travel (upper, lower): the upper lid
#: rides on the iris (looking down lowers it, looking up raises it), the lower lid a little.
GAZE_LIDS = (0.8, 0.3)


@dataclass(frozen=True)
class IrisMove:
    """One eye's gaze move: the iris at ``centre`` [2] moved by ``shift`` [2] (pixels),
    ``bump`` [S,S] float32 (a Gaussian about the iris's new place, as wide as 1.3 × its
    radius: the displacement's weight, so the iris moves whole and the sclera beside it
    squeezes or stretches) and ``eye`` [S,S] float32 (the eye's opening, slightly blurred:
    the iris's move stays inside it)."""

    shift: np.ndarray
    bump: np.ndarray
    eye: np.ndarray
    centre: np.ndarray


def iris_moves(points: np.ndarray, amount: float, axis: int, size: int) -> list[IrisMove]:
    """Each eye's :class:`IrisMove` for a gaze of ``amount`` (−1…1) along ``axis`` (0: across,
    1: up/down) in a crop of side ``size``; an eye whose opening is not in the crop is left
    out. The iris is the refined iris point where ``points`` has it ([478,2]), else the eye's
    centre."""
    u = interocular(points)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    moves = []
    for side, centre in enumerate(iris_centres(points)):
        contour = points[list(EYE_CONTOURS[side])]
        width = float(np.linalg.norm(points[EYE_CORNERS[2 * side + 1]]
                                     - points[EYE_CORNERS[2 * side]]))
        if len(points) >= 478:
            ring = points[list(IRISES[side][1:])]
            radius = float(np.linalg.norm(ring - centre, axis=1).mean())
        else:
            radius = 0.2 * width
        travel = GAZE_TRAVEL[0] * width if axis == 0 else GAZE_TRAVEL[1] * u
        shift = np.zeros(2, np.float32)
        shift[axis] = travel * amount
        eye = polygon_mask((size, size), contour, 0.4)
        if eye.max() < 0.5:
            continue
        sigma = max(1.3 * radius, 1.0)
        moved_centre = centre + shift
        bump = np.exp(-((xs - moved_centre[0]) ** 2 + (ys - moved_centre[1]) ** 2)
                      / np.float32(2 * sigma * sigma))
        moves.append(IrisMove(shift, bump.astype(np.float32), eye,
                              np.asarray(centre, np.float64)))
    return moves


def _border(size: int, per_side: int = 6) -> np.ndarray:
    edge = np.linspace(0, size - 1, per_side)
    top = np.stack([edge, np.zeros_like(edge)], 1)
    bottom = np.stack([edge, np.full_like(edge, size - 1)], 1)
    left = np.stack([np.zeros_like(edge), edge], 1)
    right = np.stack([np.full_like(edge, size - 1), edge], 1)
    return np.concatenate([top, bottom, left, right])


class MeshMoves:
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


def _smile(m: MeshMoves, u: float, amount: float) -> None:
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


def _frown(m: MeshMoves, u: float, a: float) -> None:
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


def _brows_raised(m: MeshMoves, u: float, a: float) -> None:
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


def _eyes(m: MeshMoves, u: float, a: float, closed: bool) -> None:
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


def _mouth_open(m: MeshMoves, u: float, a: float) -> None:
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


def _pout(m: MeshMoves, u: float, a: float) -> None:
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


def _gaze_lids(m: MeshMoves, u: float, a: float) -> None:
    travel = GAZE_TRAVEL[1] * u * a                       # down for a > 0
    for side in (0, 1):
        for i in EYE_UPPER[side]:
            m.set(i, 0.0, GAZE_LIDS[0] * travel)
        for i in EYE_LOWER[side]:
            m.set(i, 0.0, GAZE_LIDS[1] * travel)
        for i in LID_FOLDS[side]:
            m.set(i, 0.0, 0.5 * GAZE_LIDS[0] * travel)
        m.fix(UNDER_EYES[side])
    m.fix(EYE_CORNERS + BROWS + NOSE)


def _head(m: MeshMoves, u: float, a: float, axis: int) -> None:
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


def mesh_moves(kind: str, points: np.ndarray, amount: float) -> MeshMoves:
    """Where warp ``kind`` at ``amount`` moves the mesh points (a map index -> shift)."""
    u = interocular(points)
    moves = MeshMoves(points)
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
    elif kind == "gaze_vertical":
        _gaze_lids(moves, u, amount)
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

    merge = max(sigma / 5, 0.5)
    moves = control.source - control.target
    wanted = (control.exact if control.exact is not None
              else np.zeros(len(moves), bool))
    order = np.argsort(-np.linalg.norm(moves, axis=1), kind="stable")  # moving points first
    targets = control.target[order]
    close = np.linalg.norm(targets[:, None] - targets[None], axis=2) < merge
    kept: list[int] = []
    for i in range(len(targets)):  # each point unless one kept before it is too close
        if not close[i, kept].any():
            kept.append(i)
    target_a = targets[kept].astype(np.float64)
    shift_a = moves[order][kept].astype(np.float64)
    exact_a = wanted[order][kept].astype(bool)

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
    axis = np.linspace(0, size - 1, grid).astype(np.float32)

    def on_lattice(centres: np.ndarray, values: np.ndarray, width: float) -> np.ndarray:
        """[grid,grid,C]: Σ_k values[k]·exp(−|x − centres[k]|² / width) at the lattice's
        points, the Gaussian split into its x and y factors (two small matrix products
        instead of a [grid², K] table)."""
        gx = np.exp(-(axis[:, None] - centres[None, :, 0].astype(np.float32)) ** 2
                    / np.float32(width))
        gy = np.exp(-(axis[:, None] - centres[None, :, 1].astype(np.float32)) ** 2
                    / np.float32(width))
        values = values.astype(np.float32)
        return np.stack([gy @ (gx * values[:, c]).T for c in range(values.shape[1])], axis=2)

    wide = 2 * sigma * sigma
    spread_part = on_lattice(target_a, np.concatenate([shift_a, np.ones((len(shift_a), 1))],
                                                      axis=1), wide)
    field = (spread_part[..., :2] / (spread_part[..., 2:] + np.float32(1e-2))
             + on_lattice(anchors, coeffs, narrow))
    field = cv2.resize(field.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return xs + field[..., 0], ys + field[..., 1]


def moved_points(kind: str, points: np.ndarray, amount: float) -> np.ndarray:
    """[P,2]: where warp ``kind`` at ``amount`` puts each mesh point it controls (the others
    unchanged); for checks of the warps' own geometry."""
    out = points.astype(np.float64).copy()
    for i, shift in mesh_moves(kind, points, amount).shift.items():
        out[i] = points[i] + shift
    return out


# --- an edit read as its action units -------------------------------------------------------

#: The kinds whose motion is a field: mesh points moved by their action units, the irises moved
#: inside the eyes' openings (:func:`iris_moves`), or the head rolled.
FIELD_KINDS = ("smile", "frown", "brows_raised", "eyes_closed", "eyes_wide", "mouth_open",
               "pout", "gaze_horizontal", "gaze_vertical", "yaw", "pitch", "roll")
#: Kinds whose field the transfer applies at the amount asked instead of as far as the model's
#: edit goes: the eyes are a few pixels of a model's render (a 64-px crop's eye is 3 px tall).
#: Fitted on the real clip's key frames, the embedded model moves its irises 0.07 / 0.10 / 0.15
#: of the taught gaze at strength 1 / 2 / 3 — nothing a person sees — and its lids 0.69 / 0.60
#: / 0.43 of the taught closing and 0.51 / 0.46 / 0.40 of the widening, shrinking as the
#: strength grows (held out, dlib's eye opening at eyes_closed 1 / 2 / 3: −0.019 / −0.017 /
#: −0.017). Moving the person's own irises and lids keeps who they are, as drawn teeth do.
DRAWN_KINDS = (*GAZE_KINDS, "eyes_closed", "eyes_wide")
#: Strength α of a model's edit that the full expression (amount 1) is.
FULL_STRENGTH = 3.0


def action_field(kind: str, points: np.ndarray, amount: float, size: int) -> np.ndarray:
    """[size,size,2] float32: the backward motion of expression ``kind`` at ``amount`` in a
    crop of side ``size`` whose mesh points are ``points`` [468+,2]: the pixel at p of the
    expression is the crop's at p + field(p) (``cv2.remap``'s convention, as
    :meth:`~vidinv.face.transfer.EditTransfer.field`'s flow)."""
    import cv2

    if kind not in FIELD_KINDS:
        raise ValueError(f"{kind!r} has no motion field; these have: {', '.join(FIELD_KINDS)}")
    low, high = AMOUNT_RANGE[kind]
    amount = float(np.clip(amount, low, high))
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    if amount == 0.0:
        return np.zeros((size, size, 2), np.float32)
    if kind == "gaze_horizontal":   # the irises alone (below)
        map_x, map_y = xs, ys
    elif kind == "roll":
        centre = points[list(EYE_CORNERS) + list(MOUTH_CORNERS)].mean(0)
        forward = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])),
                                          -ROLL_DEGREES * amount, 1.0)
        back = cv2.invertAffineTransform(forward)
        map_x = back[0, 0] * xs + back[0, 1] * ys + back[0, 2]
        map_y = back[1, 0] * xs + back[1, 1] * ys + back[1, 2]
    else:   # mesh points moved by their action units (a vertical gaze: the lids follow)
        map_x, map_y = dense_backward_map(control_points(kind, points, amount, size), size,
                                          REACH[kind] * interocular(points))
    field = np.dstack([map_x - xs, map_y - ys]).astype(np.float32)
    if kind in GAZE_KINDS:
        # the irises moved inside each eye's opening: the iris's new place takes its pixel
        # from the iris (what the lids' field leaves of −shift there, spread by the bump)
        for move in iris_moves(points, amount, GAZE_KINDS.index(kind), size):
            target = move.centre + move.shift
            at = np.array([cv2.remap(np.ascontiguousarray(field[..., c]),
                                     np.float32([[target[0]]]), np.float32([[target[1]]]),
                                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0, 0]
                           for c in (0, 1)], np.float32)
            field += (move.bump * move.eye)[..., None] * (-move.shift - at)
    return field


def edit_actions(strengths: dict[str, float]) -> dict[str, float] | None:
    """The expressions and amounts (kind → amount, ``α / FULL_STRENGTH`` signed by
    :data:`EDIT_OF_WARP` / :data:`EXTRA_EDITS`, at most 1) that the model's edits in force
    (``strengths``: edit name → α; 0 is not in force) were taught; None when one of them is not
    an expression with a field (another direction, or an amount outside the expression's range,
    e.g. a negative smile) or none is in force."""
    actions: dict[str, float] = {}
    for name, alpha in strengths.items():
        if alpha == 0.0:
            continue
        kind, sign = EDIT_OF_WARP.get(name) or EXTRA_EDITS.get(name) or (None, 0.0)
        if kind not in FIELD_KINDS:
            return None
        amount = sign * alpha / FULL_STRENGTH
        low, high = AMOUNT_RANGE[kind]
        if (low == 0.0 and amount < 0.0) or kind in actions:
            return None
        actions[kind] = float(np.clip(amount, low, high))
    return actions or None
