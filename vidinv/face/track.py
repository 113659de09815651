"""Following one face through a clip, and bridging short gaps where it was not found.

:class:`FaceTracker` picks the face to follow (the largest, the one nearest a point, or the
n-th largest) in the first frame that has faces, then in every frame takes the detection nearest
the face's last position, if it is close enough and about the same size. :func:`bridge_gaps`
streams frames and fills, for each face (identity) of ``Frame.slots``, runs of at most
``max_gap`` frames without it by interpolating the crop (c, x, y) and the landmarks between the
frames on either side; longer runs, and runs at the start or end of the clip, pass through
(a frame with no face left has ``face_found=False``). Following several faces as identities
is :mod:`vidinv.face.identities`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from vidinv.face.align import CropQuad
from vidinv.face.landmarks import box_area
from vidinv.frame import FaceLandmarks, FaceSlot, Frame

Target = str | int | tuple[float, float]


def face_centre(face: FaceLandmarks) -> np.ndarray:
    x0, y0, x1, y1 = face.box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float64)


def face_size(face: FaceLandmarks) -> float:
    """√(box area): the face's linear size in pixels."""
    return math.sqrt(max(box_area(face.box), 1.0))


class FaceTracker:
    """Chooses one face per frame and keeps following it.

    Args:
        target: which face to follow once faces appear: ``"largest"``, an index into the
            first frame's faces sorted largest first (0 = largest), or an (x, y) point in frame
            pixels (the face whose box centre is nearest).
        max_jump: the followed face may move at most this many face sizes between two frames
            in which it was found (more, counting the frames it was lost).
        max_scale_change: and change its size by at most this factor.
        reacquire_after: after this many frames without the face, choose again by ``target``.
    """

    def __init__(self, target: Target = "largest", *, max_jump: float = 0.5,
                 max_scale_change: float = 1.5, reacquire_after: int = 15) -> None:
        if isinstance(target, str) and target != "largest":
            raise ValueError(f"target must be 'largest', an index or an (x, y) point, "
                             f"not {target!r}")
        self.target = target
        self.max_jump = float(max_jump)
        self.max_scale_change = float(max_scale_change)
        self.reacquire_after = int(reacquire_after)
        self.reset()

    def reset(self) -> None:
        self._last: FaceLandmarks | None = None
        self._lost = 0

    def _acquire(self, faces: Sequence[FaceLandmarks]) -> FaceLandmarks | None:
        ordered = sorted(faces, key=lambda f: box_area(f.box), reverse=True)
        if not ordered:
            return None
        if isinstance(self.target, str):
            return ordered[0]
        if isinstance(self.target, int):
            return ordered[self.target] if self.target < len(ordered) else None
        point = np.asarray(self.target, dtype=np.float64)
        return min(ordered, key=lambda f: float(np.hypot(*(face_centre(f) - point))))

    def _follow(self, faces: Sequence[FaceLandmarks]) -> FaceLandmarks | None:
        assert self._last is not None
        centre, size = face_centre(self._last), face_size(self._last)
        reach = self.max_jump * size * (1 + self._lost)
        best, best_distance = None, math.inf
        for face in faces:
            ratio = face_size(face) / size
            if not 1 / self.max_scale_change <= ratio <= self.max_scale_change:
                continue
            distance = float(np.hypot(*(face_centre(face) - centre)))
            if distance <= reach and distance < best_distance:
                best, best_distance = face, distance
        return best

    def update(self, faces: Sequence[FaceLandmarks]) -> FaceLandmarks | None:
        """The followed face among this frame's ``faces``, or None if it is not there."""
        if self._last is None or self._lost > self.reacquire_after:
            chosen = self._acquire(faces)
        else:
            chosen = self._follow(faces)
        if chosen is None:
            self._lost += 1
        else:
            self._last, self._lost = chosen, 0
        return chosen


def interpolate_landmarks(a: FaceLandmarks, b: FaceLandmarks, t: float) -> FaceLandmarks:
    """Linear interpolation of every point (a at t = 0, b at t = 1); score the lower one."""

    def mix(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (1 - t) * np.asarray(p, np.float64) + t * np.asarray(q, np.float64)

    points = mix(a.points, b.points) if a.points.shape == b.points.shape else a.points.copy()
    box = tuple(float(v) for v in mix(np.array(a.box), np.array(b.box)))
    return replace(a, eye_left=mix(a.eye_left, b.eye_left), eye_right=mix(a.eye_right, b.eye_right),
                   mouth_left=mix(a.mouth_left, b.mouth_left),
                   mouth_right=mix(a.mouth_right, b.mouth_right), points=points, box=box,
                   score=min(a.score, b.score))


def bridge_gaps(frames: Iterable[Frame], max_gap: int) -> Iterator[Frame]:
    """Fill runs of ≤ ``max_gap`` frames without a face between two frames with it, per face.

    A face is an identity of ``frame.slots`` (each slot must carry ``crop_quad``). In a frame
    where a face is missing between two frames that have it at most ``max_gap`` frames apart,
    a slot is added with the quad and landmarks interpolated, ``bridged = True``; the frame
    gets ``face_found = True``. Streaming: every frame is held ``max_gap`` frames.
    """
    if max_gap <= 0:
        yield from frames
        return
    held: deque[tuple[int, Frame]] = deque()
    last: dict[int, tuple[int, FaceSlot]] = {}  # identity -> (position, slot) last seen
    for position, frame in enumerate(frames):
        for slot in frame.slots:
            if slot.identity in last:
                start_position, start = last[slot.identity]
                missing = position - start_position - 1
                if 1 <= missing <= max_gap:
                    lost = [f for p, f in held if p > start_position]
                    for k, between in enumerate(lost, start=1):
                        between.slots = sorted(
                            [*between.slots, _interpolated(start, slot, k / (missing + 1))],
                            key=lambda s: s.identity)
                        between.face_found = True
            last[slot.identity] = (position, slot)
        held.append((position, frame))
        while len(held) > max_gap:
            yield held.popleft()[1]
    while held:
        yield held.popleft()[1]


def _interpolated(start: FaceSlot, end: FaceSlot, t: float) -> FaceSlot:
    landmarks = (interpolate_landmarks(start.landmarks, end.landmarks, t)
                 if start.landmarks is not None and end.landmarks is not None else None)
    quad: CropQuad = start.crop_quad
    return FaceSlot(identity=start.identity, landmarks=landmarks,
                    crop_quad=quad.lerp(end.crop_quad, t), bridged=True)
