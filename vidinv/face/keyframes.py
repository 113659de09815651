"""Key frames: where the networks and the edit's flow run; the frames between carry the field.

An edit changes slowly next to the frame rate: while a face holds its pose and expression,
its edit field (the transfer's flow and appearance change, in the aligned crop's geometry)
stays the same, and each frame's own crop transform carries it to where the face is now.
:class:`KeyFrameChooser` says, per face (identity), whether a frame must be a key frame: the
first of a run, the first after ``every`` − 1 carried frames, and any frame in which a
landmark moved more than ``motion`` inter-ocular distances in the crop since the last key
frame beyond what an affine map of the whole face explains (an expression, or a turn of the
head, that the last field does not fit). :func:`follow_map` moves the key frame's field
with the landmarks to each carried frame's crop.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidinv.frame import FaceLandmarks

#: σ of the interpolation of the landmarks' motion into a dense field, in crop sides.
FOLLOW_SIGMA = 0.05


def crop_points(landmarks: FaceLandmarks, crop_from_frame: np.ndarray) -> np.ndarray:
    """[N,2] float64: the face's points in the crop's pixels (``crop_from_frame`` 3×3)."""
    matrix = np.asarray(crop_from_frame, dtype=np.float64)[:2]
    return np.asarray(landmarks.points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def crop_landmarks(landmarks: FaceLandmarks, crop_from_frame: np.ndarray) -> np.ndarray:
    """[N,2] float64: the face's points in the crop, divided by the inter-ocular distance
    there (so the same motion measures the same at every crop size)."""
    matrix = np.asarray(crop_from_frame, dtype=np.float64)[:2]
    eyes = np.stack([landmarks.eye_left, landmarks.eye_right]).astype(np.float64)
    eyes = eyes @ matrix[:, :2].T + matrix[:, 2]
    distance = float(np.linalg.norm(eyes[1] - eyes[0]))
    return crop_points(landmarks, crop_from_frame) / max(distance, 1e-6)


def affine_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[2,3] least-squares affine map of [N,2] ``source`` points onto ``target``."""
    design = np.hstack([source, np.ones((len(source), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return solution.T


def nonrigid_motion(points: np.ndarray, key_points: np.ndarray) -> float:
    """The largest distance between ``points`` and ``key_points`` ([N,2]) that an affine map
    of the face cannot explain (an expression, not the head's place in the crop)."""
    matrix = affine_map(key_points, points)
    fitted = key_points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((points - fitted) ** 2).sum(axis=1)).max())


def follow_map(size: int, key_points: np.ndarray, points: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """How a field in a key frame's crop moves with the face to this frame's crop, for crops
    of ``size`` U: (x, y) [U,U] float32, where in the key frame's crop each pixel of this
    frame's crop takes its value from. ``key_points`` and ``points`` [N,2] are the same
    landmarks in the two crops (U pixels). The motion is an affine map of all the points plus
    what it leaves over, interpolated between the points (Gaussian-weighted, σ =
    :data:`FOLLOW_SIGMA` of U), so the field stays on the mouth as the mouth moves. One map
    moves every field of the face (:func:`resample_followed`)."""
    back = affine_map(points, key_points)  # this crop -> the key frame's crop
    left_over = key_points - (points @ back[:, :2].T + back[:, 2])
    sums = np.zeros((size, size, 3), np.float32)
    cells = np.clip(np.rint(points).astype(int), 0, size - 1)
    np.add.at(sums, (cells[:, 1], cells[:, 0]), np.hstack(
        [left_over, np.ones((len(points), 1))]).astype(np.float32))
    sums = cv2.GaussianBlur(sums, (0, 0), FOLLOW_SIGMA * size)
    weight = sums[..., 2:]
    # the left-over motion where points are near, fading to the affine map where none are
    peak = float(weight.max()) if weight.size else 0.0
    confidence = np.clip(weight / max(peak * 0.25, 1e-12), 0, 1)
    extra = sums[..., :2] / np.maximum(weight, 1e-12) * confidence
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    map_x = back[0, 0] * xs + back[0, 1] * ys + back[0, 2] + extra[..., 0]
    map_y = back[1, 0] * xs + back[1, 1] * ys + back[1, 2] + extra[..., 1]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def resample_followed(values: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``values`` [U,U,C] float32 moved along ``maps`` (:func:`follow_map`): bilinear, 0
    outside the key frame's crop."""
    moved = cv2.remap(values, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=0)
    return moved.reshape(values.shape)


class KeyFrameChooser:
    """Per identity: is this frame a key frame? (One chooser per clip.)

    Args:
        motion: the most a landmark may move in the crop since the last key frame, beyond
            an affine map of the face, in inter-ocular distances, before the next frame is a
            key frame (> 0).
        every: a key frame at least every this many frames (1: every frame is one).
    """

    def __init__(self, motion: float = 0.08, every: int = 4) -> None:
        if not motion > 0:
            raise ValueError(f"motion must be > 0, not {motion}")
        if every < 1:
            raise ValueError(f"every must be ≥ 1, not {every}")
        self.motion = float(motion)
        self.every = int(every)
        self._last: dict[int, tuple[np.ndarray | None, int]] = {}  # identity -> (points, age)

    def keep_only(self, identities: set[int]) -> None:
        """Forget the faces not in this frame (their run ended: the next is a key frame)."""
        self._last = {i: last for i, last in self._last.items() if i in identities}

    def is_key(self, identity: int, points: np.ndarray | None) -> bool:
        """Whether face ``identity`` with crop points ``points`` ([N,2] from
        :func:`crop_landmarks`; None: unknown, a key frame) is a key frame; remembers it."""
        last = self._last.get(identity)
        key = (last is None or points is None or last[0] is None
               or last[1] + 1 >= self.every or last[0].shape != points.shape
               or nonrigid_motion(points, last[0]) > self.motion)
        self._last[identity] = (points, 0) if key else (last[0], last[1] + 1)
        return key
