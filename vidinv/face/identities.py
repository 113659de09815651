"""Faces as identities across a clip, and the choice of which of them to edit.

:class:`IdentityTracker` gives every face of every frame an identity (an int, the same in every
frame the person is in):

* each frame's detections are matched to the tracks of the frames before by a cost of centre
  distance (from the track's constant-velocity prediction, in face sizes), 1 − box IoU and the
  difference of landmark shape (eyes and mouth corners relative to the box), gated by a reach
  of ``max_jump`` face sizes and a size ratio, and solved as an assignment problem;
* a detection no track takes, one taken by a track that was lost for a few frames, or one
  that overlaps another face (people crossing) is
  described by dlib's 128-d face descriptor (:class:`FaceDescriber`) and compared with the
  tracks not seen in this frame: under ``same_person`` the nearest one gets it back (a face
  that left and came back, or was hidden behind another one), else it is a new identity;
* every track is described again now and then (every ``describe_every`` frames, more often
  while it has few samples), so the descriptors follow the face without paying dlib's cost
  (tens of milliseconds to a few hundred per face on a CPU) on every frame.

:class:`FaceChoice` says which faces are edited: ``largest`` (the largest face, as followed by
:class:`~vidinv.face.track.FaceTracker`), ``all``, one identity fixed by its index in
left-to-right order at the first frame with faces, or the face most like a reference photo's
(re-checked whenever the chosen identity is not in view). :class:`FaceSelector` applies it
frame by frame.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidinv.face.errors import FaceChoiceError, FaceReferenceError
from vidinv.face.landmarks import box_area, box_iou
from vidinv.frame import DLIB_POINTS, MESH_POINTS, FaceLandmarks

#: dlib descriptor distance under which two faces are taken for the same person (dlib's own
#: threshold for its face recognition model is 0.6).
SAME_PERSON = 0.6

#: The 5 points dlib's face chip (and so its descriptor) is cut from: the image-right eye's
#: outer and inner corner, the image-left eye's outer and inner corner, the base of the nose.
_FIVE_POINTS = {MESH_POINTS: (263, 362, 33, 133, 2), DLIB_POINTS: (45, 42, 36, 39, 33)}


def _centre(box: Sequence[float]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)


def _size(box: Sequence[float]) -> float:
    return math.sqrt(max(box_area(box), 1.0))


def _shape(face: FaceLandmarks) -> np.ndarray:
    """(8,): eyes and mouth corners relative to the box centre, in box sizes."""
    points = np.stack([face.eye_left, face.eye_right, face.mouth_left, face.mouth_right])
    return ((points - _centre(face.box)) / _size(face.box)).ravel()


class FaceDescriber:
    """dlib's 128-d face descriptor (``face_recognition_models``' ResNet) of a face given by
    its landmarks: the face chip is cut from five of the points (eye corners, nose base), so
    any landmark backend's faces can be described. Models load on first use."""

    def __init__(self) -> None:
        self._model: Any = None
        self._dlib: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from vidinv.face.landmarks import dlib_predictor_path

        try:
            import dlib
        except ImportError as error:
            raise FaceReferenceError("telling faces apart needs dlib: pip install dlib-bin "
                                     "(or dlib)") from error
        path = dlib_predictor_path().parent / "dlib_face_recognition_resnet_model_v1.dat"
        if not path.is_file():
            raise FaceReferenceError(f"{path}: dlib's face recognition model is missing; "
                                     "pip install --force-reinstall face_recognition_models")
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(path))

    def describe(self, image: np.ndarray, face: FaceLandmarks) -> np.ndarray:
        """(128,) float64 descriptor of ``face`` in ``image`` ([H,W,3] uint8 RGB)."""
        self._load()
        dlib = self._dlib
        indices = _FIVE_POINTS[MESH_POINTS if len(face.points) >= MESH_POINTS else DLIB_POINTS]
        points = np.asarray(face.points, dtype=np.float64)[list(indices)]
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int)
        shape = dlib.full_object_detection(
            dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
            [dlib.point(int(round(x)), int(round(y))) for x, y in points])
        descriptor = self._model.compute_face_descriptor(np.ascontiguousarray(image), shape)
        return np.asarray(descriptor, dtype=np.float64)


@dataclass
class _Track:
    identity: int
    face: FaceLandmarks
    seen: int                                   # index of the last frame it was in
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    samples: list[np.ndarray] = field(default_factory=list)
    described: int = -10**9                     # frame of the last descriptor sample

    @property
    def descriptor(self) -> np.ndarray | None:
        return np.mean(self.samples, axis=0) if self.samples else None

    def predicted_centre(self, frame: int) -> np.ndarray:
        return _centre(self.face.box) + self.velocity * (frame - self.seen)


class IdentityTracker:
    """Gives each detected face an identity that stays with the person (see the module text).

    Args:
        describer: the descriptor of faces; None tracks by motion alone (a face that leaves
            and comes back gets a new identity).
        max_jump: a face may move at most this many face sizes from where its track predicts
            it, per frame it was not seen (plus one).
        max_scale_change: and change its size by at most this factor.
        motion_frames: tracks lost longer than this are matched only by descriptor.
        verify_after: a track lost this many frames or more checks the descriptor of the face
            it is matched to before taking it back.
        describe_every: frames between two descriptor samples of a tracked face (a track with
            fewer than ``first_samples`` samples is described every ``first_every`` frames).
        same_person: descriptor distance under which two faces are the same person.
        max_tracks: identities remembered (the longest gone are forgotten first).
        crowd_iou: a face whose box overlaps another's by more than this IoU (people
            crossing) is checked by descriptor against its track in every such frame; one
            that matches nobody known gets no identity (the detector's landmarks sliding
            from a hidden face onto the one in front).
    """

    def __init__(self, describer: FaceDescriber | None = None, *, max_jump: float = 0.5,
                 max_scale_change: float = 1.5, motion_frames: int = 8, verify_after: int = 3,
                 describe_every: int = 15, first_samples: int = 3, first_every: int = 3,
                 keep_samples: int = 5, same_person: float = SAME_PERSON,
                 max_tracks: int = 64, crowd_iou: float = 0.1) -> None:
        self.describer = describer
        self.max_jump = float(max_jump)
        self.max_scale_change = float(max_scale_change)
        self.motion_frames = int(motion_frames)
        self.verify_after = int(verify_after)
        self.describe_every = int(describe_every)
        self.first_samples = int(first_samples)
        self.first_every = int(first_every)
        self.keep_samples = int(keep_samples)
        self.same_person = float(same_person)
        self.max_tracks = int(max_tracks)
        self.crowd_iou = float(crowd_iou)
        self.tracks: list[_Track] = []
        self._next_identity = 0
        self._frame = -1

    def track(self, identity: int) -> _Track | None:
        return next((t for t in self.tracks if t.identity == identity), None)

    def _describe(self, image: np.ndarray, face: FaceLandmarks) -> np.ndarray | None:
        return self.describer.describe(image, face) if self.describer is not None else None

    def _distance(self, track: _Track, descriptor: np.ndarray | None) -> float:
        own = track.descriptor
        if own is None or descriptor is None:
            return math.inf
        return float(np.linalg.norm(own - descriptor))

    def _motion_cost(self, track: _Track, face: FaceLandmarks, frame: int) -> float:
        size = _size(track.face.box)
        ratio = _size(face.box) / size
        if not 1 / self.max_scale_change <= ratio <= self.max_scale_change:
            return math.inf
        lost = frame - track.seen - 1
        distance = float(np.linalg.norm(_centre(face.box) - track.predicted_centre(frame))) / size
        if distance > self.max_jump * (1 + lost):
            return math.inf
        shape = float(np.linalg.norm(_shape(face) - _shape(track.face)))
        return distance + (1 - box_iou(face.box, track.face.box)) + shape

    def _add_sample(self, track: _Track, descriptor: np.ndarray, frame: int) -> None:
        track.samples = [*track.samples, descriptor][-self.keep_samples:]
        track.described = frame

    def update(self, frame: int, image: np.ndarray,
               faces: Sequence[FaceLandmarks]) -> list[tuple[int, FaceLandmarks]]:
        """(identity, landmarks) of the faces of frame ``frame`` (``image`` [H,W,3] uint8
        RGB, ``faces`` its detections), in the order of ``faces``; a crowded face that matches
        nobody known is left out."""
        from scipy.optimize import linear_sum_assignment

        self._frame = frame
        near = [t for t in self.tracks if frame - t.seen - 1 < self.motion_frames]
        assigned: dict[int, _Track] = {}
        if near and faces:
            cost = np.array([[self._motion_cost(t, f, frame) for f in faces] for t in near])
            finite = np.where(np.isfinite(cost), cost, 1e9)
            for row, col in zip(*linear_sum_assignment(finite), strict=True):
                if np.isfinite(cost[row, col]):
                    assigned[int(col)] = near[int(row)]
        descriptors: dict[int, np.ndarray | None] = {}
        crowded = {col for col, face in enumerate(faces)
                   if any(box_iou(face.box, other.box) > self.crowd_iou
                          for other in faces if other is not face)}
        for col, track in list(assigned.items()):
            if track.descriptor is None or not (
                    col in crowded or frame - track.seen - 1 >= self.verify_after):
                continue
            descriptors[col] = self._describe(image, faces[col])
            if self._distance(track, descriptors[col]) >= self.same_person:
                del assigned[col]  # not the face this track lost: decided below
        taken = {id(t) for t in assigned.values()}
        for col, face in enumerate(faces):
            if col in assigned:
                continue
            if col not in descriptors:
                descriptors[col] = self._describe(image, face)
            free = [t for t in self.tracks if id(t) not in taken]
            best = min(free, key=lambda t: self._distance(t, descriptors[col]), default=None)
            if best is not None and self._distance(best, descriptors[col]) < self.same_person:
                assigned[col] = best
            elif col in crowded and self.describer is not None:
                continue  # a face overlapping another that is nobody known: a ghost of the
                #           detector's (a mesh sliding onto the face in front), no identity
            else:
                assigned[col] = _Track(self._next_identity, face, frame)
                self._next_identity += 1
                self.tracks.append(assigned[col])
            taken.add(id(assigned[col]))
        result = []
        for col, face in enumerate(faces):
            if col not in assigned:
                continue
            track = assigned[col]
            step = frame - track.seen
            if step > 0:  # an existing track (a new one was made at this frame)
                track.velocity = ((_centre(face.box) - _centre(track.face.box)) / step
                                  if step <= self.motion_frames else np.zeros(2))
            track.face, track.seen = face, frame
            if descriptors.get(col) is not None:
                self._add_sample(track, descriptors[col], frame)
            elif self.describer is not None and frame - track.described >= (
                    self.first_every if len(track.samples) < self.first_samples
                    else self.describe_every):
                self._add_sample(track, self.describer.describe(image, face), frame)
            result.append((track.identity, face))
        if len(self.tracks) > self.max_tracks:  # forget the longest gone
            self.tracks = sorted(self.tracks, key=lambda t: t.seen)[-self.max_tracks:]
        return result


@dataclass(frozen=True, eq=False)
class FaceChoice:
    """Which faces are edited: ``mode`` ``largest``, ``all``, ``index`` (``index``-th from the
    left at the first frame with faces) or ``reference`` (``reference`` [128] float64, the
    descriptor of the person to edit)."""

    mode: str = "largest"
    index: int = 0
    reference: np.ndarray | None = None

    @property
    def multi(self) -> bool:
        """Whether every face is detected and tracked (all but ``largest``)."""
        return self.mode != "largest"


def parse_face_choice(select: str, reference: str = "", *, landmarks: str = "mediapipe",
                      option: str = "--face") -> FaceChoice:
    """A FaceChoice from the settings ``face.select`` (``largest``, ``all`` or an index) and
    ``face.reference`` (a photo's path; it wins over ``select``). One-line errors for a bad
    value or a photo without exactly one face."""
    if reference:
        return FaceChoice("reference", reference=reference_descriptor(reference, landmarks))
    text = str(select).strip().lower()
    if text in ("largest", "all"):
        return FaceChoice(text)
    if text.isdigit():
        return FaceChoice("index", index=int(text))
    raise FaceChoiceError(f"{option} {select!r}: write largest, all, or the face's index from "
                          "the left (0 = leftmost at the first frame with faces)")


@functools.lru_cache(maxsize=8)
def _photo_descriptor(path: str, mtime_ns: int, size: int, landmarks: str) -> np.ndarray:
    import cv2

    from vidinv.face.landmarks import create_landmark_detector

    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise FaceReferenceError(f"--face-ref {path}: not a picture OpenCV can read; pass a "
                                 ".jpg or .png photo of the person")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    options = {"mode": "static"} if landmarks == "mediapipe" else {}
    with create_landmark_detector(landmarks, max_faces=8, **options) as detector:
        faces = detector.detect(image)
    if len(faces) != 1:
        found = "no face" if not faces else f"{len(faces)} faces"
        raise FaceReferenceError(f"--face-ref {path}: {found} found in the photo; pass a photo "
                                 "with exactly one face (crop it to the person)")
    return FaceDescriber().describe(image, faces[0])


def reference_descriptor(path: str | Path, landmarks: str = "mediapipe") -> np.ndarray:
    """(128,) descriptor of the one face in the photo at ``path`` (cached per file version)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise FaceReferenceError(f"--face-ref {path}: no such file; pass a photo of the "
                                 "person to edit") from None
    if not path.is_file():
        raise FaceReferenceError(f"--face-ref {path}: not a file; pass a photo of the person")
    return _photo_descriptor(str(path), stat.st_mtime_ns, stat.st_size, landmarks)


def describe_positions(faces: Sequence[FaceLandmarks]) -> str:
    """``x≈120 and x≈410``: the faces' centres, left to right."""
    xs = sorted(round(_centre(face.box)[0]) for face in faces)
    words = [f"x≈{x}" for x in xs]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


class FaceSelector:
    """Applies a :class:`FaceChoice` (not ``largest``) frame by frame to the tracker's faces.

    :meth:`choose` takes one frame's (identity, landmarks) pairs and returns the chosen ones,
    in identity order. An index choice raises :class:`FaceChoiceError` at the first frame with
    faces when there are too few.
    """

    def __init__(self, choice: FaceChoice, tracker: IdentityTracker) -> None:
        if not choice.multi:
            raise ValueError("FaceSelector is for all, an index or a reference")
        self.choice = choice
        self.tracker = tracker
        self.chosen: int | None = None
        self._fixed = False
        self.nearest = math.inf  # reference: the nearest descriptor distance seen
        self.ever_chosen = False

    def choose(self, frame: int, tracked: list[tuple[int, FaceLandmarks]],
               ) -> list[tuple[int, FaceLandmarks]]:
        present = sorted(tracked, key=lambda pair: pair[0])
        mode = self.choice.mode
        if mode == "all":
            return present
        if mode == "index":
            if not self._fixed and present:
                ordered = sorted(present, key=lambda pair: _centre(pair[1].box)[0])
                if self.choice.index >= len(ordered):
                    count = len(ordered)
                    raise FaceChoiceError(
                        f"--face {self.choice.index}: found {count} face"
                        f"{'s' if count != 1 else ''} at "
                        f"{describe_positions([f for _, f in ordered])} in frame {frame}; "
                        f"use an index from 0 to {count - 1} (left to right), all, or largest")
                self.chosen, self._fixed = ordered[self.choice.index][0], True
            return [pair for pair in present if pair[0] == self.chosen]
        # reference: the present face whose descriptor is nearest the photo's, if near enough
        best, best_distance = None, SAME_PERSON
        for identity, _ in present:
            track = self.tracker.track(identity)
            descriptor = track.descriptor if track is not None else None
            if descriptor is None:
                continue
            distance = float(np.linalg.norm(descriptor - self.choice.reference))
            self.nearest = min(self.nearest, distance)
            if distance < best_distance:
                best, best_distance = identity, distance
        self.chosen = best
        self.ever_chosen = self.ever_chosen or best is not None
        return [pair for pair in present if pair[0] == best]

    def check_found(self, source: str = "the clip") -> None:
        """At the end of a clip: raise :class:`FaceChoiceError` when a reference was asked for,
        faces were seen, and none of them was that person."""
        if self.choice.mode == "reference" and not self.ever_chosen and self.tracker.tracks:
            raise FaceChoiceError(
                f"--face-ref: none of the {len(self.tracker.tracks)} faces in {source} is the "
                f"person in the photo (nearest descriptor distance {self.nearest:.2f}, the same "
                f"person is under {SAME_PERSON}); pass a photo of someone in the clip")
