"""Following one face through a clip, and bridging short gaps where it was not found.

:class:`FaceTracker` picks the face to follow (the largest, the one nearest a point, or the
n-th largest) in the first frame that has faces, then in every frame takes the detection nearest
the face's last position, if it is close enough and about the same size. :func:`bridge_gaps`
streams frames and fills runs of at most ``max_gap`` frames without the face by interpolating
the crop (c, x, y) and the landmarks between the frames on either side; longer runs, and runs
at the start or end of the clip, pass through with ``face_found=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from vidinv.face.align import CropQuad
from vidinv.face.landmarks import box_area
from vidinv.frame import FaceLandmarks, Frame

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


def bridge_gaps(frames: Iterator[Frame], max_gap: int) -> Iterator[Frame]:
    """Fill runs of ≤ ``max_gap`` frames without a face between two frames with one.

    Frames with a face must carry ``crop_quad``. A filled frame gets the interpolated
    quad and landmarks, ``face_found=True`` and ``bridged = True``. Streaming: a frame
    is held at most ``max_gap`` frames (until the gap closes or grows too long).
    """
    previous: Frame | None = None  # last frame with a face, already yielded
    gap: list[Frame] = []
    for frame in frames:
        if not frame.face_found:
            if previous is None or max_gap <= 0:
                yield frame
                continue
            gap.append(frame)
            if len(gap) > max_gap:  # too long to bridge: let it all through
                yield from gap
                gap, previous = [], None
            continue
        if gap and previous is not None:
            start: CropQuad = previous.crop_quad
            end: CropQuad = frame.crop_quad
            for k, lost in enumerate(gap, start=1):
                t = k / (len(gap) + 1)
                lost.crop_quad = start.lerp(end, t)
                if previous.landmarks is not None and frame.landmarks is not None:
                    lost.landmarks = interpolate_landmarks(previous.landmarks, frame.landmarks, t)
                lost.face_found = True
                lost.bridged = True
                yield lost
            gap = []
        previous = frame
        yield frame
    yield from gap
