"""Identity embeddings with dlib's 128-d face recognition network.

The FSE paper's ID column (003, Tables 1–2) is the cosine similarity of CurricularFace features;
those weights are not available here, so this module uses dlib's ResNet
(``dlib_face_recognition_resnet_model_v1``, 128-d, the model of the ``face_recognition``
package) and says so in every report (:data:`EMBEDDING_NAME`). Numbers are therefore not
comparable with the paper's ID column, only between runs of this benchmark.

The model files come from the ``face_recognition_models`` package, found on disk without
importing it (its ``__init__`` needs ``pkg_resources``). dlib computes the descriptor from a
150×150 chip it cuts with a 5-point shape; the shape predictor needs a face box:

* ``aligned=True`` (an FFHQ-aligned crop, as the pipeline's ``aligned`` and ``rendered`` are):
  the face box is the fixed fraction :data:`FFHQ_FACE_BOX` of the crop — where dlib's HOG
  detector puts it on such crops, measured on the real test clip — so the box never jumps
  between frames (a detector's box is quantised by its scale pyramid);
* ``aligned=False`` (any photo or frame): dlib's HOG detector on the image enlarged to at least
  :attr:`IdentityEmbedder.min_side` px; the largest face, or None when there is none.

Either way a flat image (grey standard deviation below 1 level) has no face and gives None.

**Which number.** dlib's descriptors are trained so that the Euclidean distance of two faces
of one person is below 0.6 (:data:`SAME_PERSON_DISTANCE`; dlib's LFW accuracy is quoted at that
threshold) and above it for different people. Their cosine is a poor identity measure: the
descriptors are not centred, so any two faces score ~0.85–0.95 (the real test clip against
scikit-image's astronaut: ~0.9) and a reconstruction of the wrong person barely moves it. So
the benchmark reports, per output frame against its source crop:

* :func:`euclidean_distance` *d* (lower is better; < 0.6: dlib calls it the same person),
* whether *d* < 0.6 (:func:`same_person`; the share of such frames),
* :func:`distance_similarity` *s* = clip(1 − *d*/0.6, 0, 1): 1 for identical descriptors,
  falling linearly to 0 at the same-person threshold and 0 beyond it (different people score 0,
  not 0.9). TL-ID and TG-ID (:mod:`vidinv.metrics.temporal`) are built on *s*.

:func:`cosine_similarity` stays available (STIT's and the FSE paper's form, on their own
embedders) for comparison.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidinv.metrics.errors import MetricModelUnavailableError

EMBEDDING_NAME = "dlib_face_recognition_resnet_model_v1 (128-d)"
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
#: (x0, y0, x1, y1) of the face box in an FFHQ-aligned crop, as fractions of its side.
FFHQ_FACE_BOX = (0.2, 0.3, 0.8, 0.9)
#: dlib's threshold on the Euclidean distance of two descriptors for "the same person".
SAME_PERSON_DISTANCE = 0.6


def face_recognition_model_file(name: str) -> Path:
    """A model file of the ``face_recognition_models`` package, located without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricModelUnavailableError(
            "the identity metric needs dlib's face models: pip install face_recognition_models")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / name
        if path.is_file():
            return path
    raise MetricModelUnavailableError(
        f"face_recognition_models has no models/{name}; reinstall it: pip install "
        "--force-reinstall face_recognition_models")


class IdentityEmbedder:
    """``embed(image)`` → 128-d dlib descriptor (float64) or None. Models load on first use.

    Args:
        min_side: images (or aligned crops) are enlarged to at least this many px before
            detection and shape prediction; aligned crops are also shrunk to it.
        max_side: unaligned images are shrunk to at most this many px for detection.
    """

    name = EMBEDDING_NAME

    def __init__(self, *, min_side: int = 256, max_side: int = 640) -> None:
        self.min_side = int(min_side)
        self.max_side = int(max_side)
        self._dlib: Any = None
        self._detector: Any = None
        self._shape: Any = None
        self._recognition: Any = None

    def _load(self) -> None:
        if self._recognition is not None:
            return
        try:
            import dlib
        except ImportError as error:
            raise MetricModelUnavailableError(
                "the identity metric needs dlib: pip install dlib-bin (or dlib)") from error
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(face_recognition_model_file(SHAPE_FILE)))
        self._recognition = dlib.face_recognition_model_v1(
            str(face_recognition_model_file(RECOGNITION_FILE)))

    @staticmethod
    def _is_flat(image: np.ndarray) -> bool:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return float(grey.std()) < 1.0

    def _face_box(self, image: np.ndarray, aligned: bool) -> tuple[np.ndarray, Any] | None:
        """(working image, dlib rectangle) or None when no face is found."""
        dlib = self._dlib
        height, width = image.shape[:2]
        if aligned:
            work = _resize(image, self.min_side / max(height, width))
            h, w = work.shape[:2]
            x0, y0, x1, y1 = FFHQ_FACE_BOX
            return work, dlib.rectangle(int(round(x0 * w)), int(round(y0 * h)),
                                        int(round(x1 * w)) - 1, int(round(y1 * h)) - 1)
        short, long = min(height, width), max(height, width)
        factor = max(1.0, self.min_side / short)
        factor = min(factor, self.max_side / long) if long * factor > self.max_side else factor
        work = _resize(image, factor)
        if self._detector is None:  # aligned crops (the familiarity check) need none
            self._detector = dlib.get_frontal_face_detector()
        rects = self._detector(work, 0)
        if len(rects) == 0:
            return None
        return work, max(rects, key=lambda r: r.area())

    def embed(self, image: np.ndarray, *, aligned: bool = False) -> np.ndarray | None:
        """[H,W,3] uint8 RGB → (128,) float64 descriptor, or None if no face is there."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an [H,W,3] uint8 RGB image, got {image.shape} "
                             f"{image.dtype}")
        if self._is_flat(image):
            return None
        self._load()
        found = self._face_box(image, aligned)
        if found is None:
            return None
        work, rect = found
        shape = self._shape(work, rect)
        return np.asarray(self._recognition.compute_face_descriptor(work, shape),
                          dtype=np.float64)


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-9:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interpolation))


def cosine_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """a·b / (|a||b|); None when either is None (no face)."""
    if a is None or b is None:
        return None
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else None


def euclidean_distance(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """|a − b| (dlib's measure; < :data:`SAME_PERSON_DISTANCE` = same person); None if no face."""
    if a is None or b is None:
        return None
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def distance_similarity(distance: float | np.ndarray | None,
                        threshold: float = SAME_PERSON_DISTANCE) -> float | np.ndarray | None:
    """clip(1 − d/threshold, 0, 1): 1 = identical descriptors, 0 = dlib's "different person"
    or further (see the module). Works on a float or an array of distances; None stays None."""
    if distance is None:
        return None
    value = np.clip(1.0 - np.asarray(distance, dtype=np.float64) / threshold, 0.0, 1.0)
    return float(value) if value.ndim == 0 else value


def same_person(distance: float | None,
                threshold: float = SAME_PERSON_DISTANCE) -> bool | None:
    """d < threshold (dlib's same-person rule); None when there is no distance."""
    return None if distance is None else bool(distance < threshold)
