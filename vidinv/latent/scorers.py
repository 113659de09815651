"""Facial attribute scores from landmarks, for fitting InterFaceGAN directions without a classifier.

Every measurement is taken in a *face frame* that removes the face's position, size and roll:
the origin is the midpoint of the two eye centres, the x axis runs from the image-left eye to
the image-right eye, the y axis points down the face, and the unit is the inter-ocular distance
(IOD, between the eye centres of :class:`~vidinv.frame.FaceLandmarks`). With ``(u, v)`` a
point's face-frame coordinates:

* ``smile``      = mouth width + 2 · corner lift, where mouth width = ``|corner_R − corner_L|``
  and corner lift = ``v(lip centre) − mean v(corners)`` (positive when the corners rise above the
  centre of the lips; the lip centre is the midpoint of the inner lips, so opening the mouth does
  not move it). A neutral talking face scores about 0.6–0.9; a smile widens the mouth and lifts
  the corners.
* ``mouth_open`` = inner-lip gap / mouth width (``|upper inner lip − lower inner lip|`` over
  ``|corner_R − corner_L|``): ~0–0.1 closed, ~0.1–0.3 talking, ~0.5+ wide open.
* ``eyes_open``  = eye aspect ratio, the mean over both eyes of lid gap / eye width (upper lid
  to lower lid over corner to corner): ~0.25–0.4 open, below ~0.15 closing.
* ``yaw``        = ``u(nose tip)``: the nose tip's offset from the eye midpoint along the eye line,
  in IODs. 0 frontal; positive when the nose points to the image right (the subject turning to
  their left), negative the other way; a horizontally mirrored image flips the sign. On the
  bundled talking-head clip it spans about −0.14…0.2; MediaPipe reads ~0.01 high near frontal.

Points used, MediaPipe Face Mesh (468) / dlib (68):

============================  ====================  =========================
measure                       MediaPipe             dlib
============================  ====================  =========================
mouth corners (L, R)          61, 291               48, 54
inner lips (upper, lower)     13, 14                62, 66
eye L corners / lids          33, 133 / 159, 145    36, 39 / mean(37,38), mean(41,40)
eye R corners / lids          362, 263 / 386, 374   42, 45 / mean(43,44), mean(47,46)
nose tip                      1                     30
============================  ====================  =========================

MediaPipe's lids are the centre points of the lid contour, dlib's the mean of its two lid
points, so MediaPipe's ``eyes_open`` reads a little higher (the lid gap is widest at the centre).

Scores are for *ranking* samples (InterFaceGAN keeps the top and bottom quantiles), so only their
order matters; the ranges above are rough guides on real faces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vidinv.frame import DLIB_POINTS, MESH_POINTS
from vidinv.latent.errors import UnknownAttributeError

if TYPE_CHECKING:
    from vidinv.face.landmarks import LandmarkDetector
    from vidinv.frame import FaceLandmarks


# Landmark indices: (MediaPipe 468-point mesh, dlib 68-point), each a point or a tuple to average.
_INDICES: dict[str, dict[str, int | tuple[int, ...]]] = {
    "mediapipe": {
        "mouth_left": 61, "mouth_right": 291, "lip_upper": 13, "lip_lower": 14,
        "eye_left_outer": 33, "eye_left_inner": 133, "eye_left_top": 159, "eye_left_bottom": 145,
        "eye_right_inner": 362, "eye_right_outer": 263, "eye_right_top": 386,
        "eye_right_bottom": 374, "nose_tip": 1,
    },
    "dlib": {
        "mouth_left": 48, "mouth_right": 54, "lip_upper": 62, "lip_lower": 66,
        "eye_left_outer": 36, "eye_left_inner": 39, "eye_left_top": (37, 38),
        "eye_left_bottom": (41, 40), "eye_right_inner": 42, "eye_right_outer": 45,
        "eye_right_top": (43, 44), "eye_right_bottom": (47, 46), "nose_tip": 30,
    },
}


class FaceFrame:
    """Face-frame coordinates (see the module docstring) of one face's landmark points."""

    def __init__(self, face: FaceLandmarks) -> None:
        points = np.asarray(face.points, dtype=np.float64)
        if len(points) >= MESH_POINTS:
            self._indices = _INDICES["mediapipe"]
        elif len(points) == DLIB_POINTS:
            self._indices = _INDICES["dlib"]
        else:
            raise ValueError(f"expected 68 (dlib) or 468 (MediaPipe) points, got {len(points)}")
        eye_left = np.asarray(face.eye_left, dtype=np.float64)
        eye_right = np.asarray(face.eye_right, dtype=np.float64)
        axis = eye_right - eye_left
        self.iod = float(np.hypot(*axis))
        self._points = points
        self._origin = (eye_left + eye_right) / 2
        if self.iod > 0:
            x_axis = axis / self.iod
            self._basis = np.stack([x_axis, [-x_axis[1], x_axis[0]]]) / self.iod  # [2,2]

    def point(self, name: str) -> np.ndarray:
        """(u, v) of a named point (see ``_INDICES``), in IODs."""
        index = self._indices[name]
        xy = self._points[list(index)].mean(axis=0) if isinstance(index, tuple) \
            else self._points[index]
        return self._basis @ (xy - self._origin)

    def distance(self, a: str, b: str) -> float:
        return float(np.linalg.norm(self.point(a) - self.point(b)))


def _face_frame(face: FaceLandmarks) -> FaceFrame | None:
    frame = FaceFrame(face)
    return frame if frame.iod > 1e-6 else None


def smile_score(face: FaceLandmarks) -> float:
    """Mouth width + 2 · mouth-corner lift, both in IODs (NaN for a degenerate face)."""
    frame = _face_frame(face)
    if frame is None:
        return math.nan
    width = frame.distance("mouth_left", "mouth_right")
    lip_centre = (frame.point("lip_upper") + frame.point("lip_lower")) / 2
    corners = (frame.point("mouth_left") + frame.point("mouth_right")) / 2
    lift = float(lip_centre[1] - corners[1])
    return width + 2.0 * lift


def mouth_open_score(face: FaceLandmarks) -> float:
    """Inner-lip gap / mouth width (NaN for a degenerate face)."""
    frame = _face_frame(face)
    if frame is None:
        return math.nan
    width = frame.distance("mouth_left", "mouth_right")
    if width <= 1e-6:
        return math.nan
    return frame.distance("lip_upper", "lip_lower") / width


def eyes_open_score(face: FaceLandmarks) -> float:
    """Eye aspect ratio (lid gap / eye width), the mean of both eyes (NaN if degenerate)."""
    frame = _face_frame(face)
    if frame is None:
        return math.nan
    ratios = []
    for side, corners in (("left", ("outer", "inner")), ("right", ("inner", "outer"))):
        width = frame.distance(f"eye_{side}_{corners[0]}", f"eye_{side}_{corners[1]}")
        if width <= 1e-6:
            return math.nan
        ratios.append(frame.distance(f"eye_{side}_top", f"eye_{side}_bottom") / width)
    return float(np.mean(ratios))


def yaw_score(face: FaceLandmarks) -> float:
    """Signed nose-tip offset from the eye midpoint along the eye line, in IODs."""
    frame = _face_frame(face)
    if frame is None:
        return math.nan
    return float(frame.point("nose_tip")[0])


#: Attribute name -> a function of one face's landmarks returning a float (NaN if degenerate).
ATTRIBUTE_SCORERS: dict[str, Callable[[FaceLandmarks], float]] = {
    "smile": smile_score,
    "mouth_open": mouth_open_score,
    "eyes_open": eyes_open_score,
    "yaw": yaw_score,
}


def check_attribute(attribute: str) -> str:
    """``attribute`` if a scorer knows it, else an :class:`UnknownAttributeError`."""
    if attribute not in ATTRIBUTE_SCORERS:
        raise UnknownAttributeError(
            f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTE_SCORERS)}")
    return attribute


class LandmarkScorer:
    """Scores one attribute on RGB images through a landmark detector.

    ``scorer(image)``: image [H,W,3] uint8 RGB -> float, the attribute of the largest face, or
    NaN when no face is found. ``scorer.score_batch(images)``: [B,H,W,3] -> [B] float64.

    The detector runs in MediaPipe's static mode (every image independent), so a score does not
    depend on the images scored before it. Use as a context manager, or :meth:`close`.
    """

    def __init__(self, attribute: str,
                 detector: LandmarkDetector | str = "mediapipe", **detector_options: Any) -> None:
        self.attribute = check_attribute(attribute)
        self._score_face = ATTRIBUTE_SCORERS[attribute]
        if isinstance(detector, str):
            from vidinv.face.landmarks import create_landmark_detector

            if detector.lower().strip() == "mediapipe":
                detector_options.setdefault("mode", "static")
            detector = create_landmark_detector(detector, **detector_options)
        self.detector = detector

    def __repr__(self) -> str:
        return f"LandmarkScorer({self.attribute!r}, {self.detector.name!r})"

    def __call__(self, image: np.ndarray) -> float:
        faces = self.detector.detect(image)
        if not faces:
            return math.nan
        return float(self._score_face(faces[0]))

    def score_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """[B] float64 scores of [B,H,W,3] uint8 RGB images (NaN where no face)."""
        return np.array([self(image) for image in images], dtype=np.float64)

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> LandmarkScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
