"""The face stages of the pipeline: each maps an iterator of Frames to an iterator of Frames.

    DetectLandmarks → TrackFace → SmoothCrop → AlignFace → (encode, edit, render) → PasteBack

``latency`` is how many frames a stage holds back. Frames without a face (``face_found`` False)
pass through every stage unchanged; no stage drops or adds frames. Results go into the Frame's
fields (``landmarks``, ``face_found``, ``crop_from_frame``, ``aligned``, ``image``) and into
``Frame.extras`` under the names in :mod:`vidinv.face.keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from vidinv.face.align import CropQuad, Interpolation, Padding, align_from_quad, quad_from_landmarks
from vidinv.face.errors import NoFaceError
from vidinv.face.keys import CROP_QUAD, CROP_QUAD_RAW, CROP_SIZE, FACES
from vidinv.face.landmarks import LandmarkDetector, create_landmark_detector
from vidinv.face.paste import ColorMatch, FacePaster, MaskKind
from vidinv.face.smoothing import (
    AXES,
    CentredGaussianWindow,
    EmaFilter,
    OneEuroFilter,
    quad_sigmas,
)
from vidinv.face.track import FaceTracker, Target, bridge_gaps
from vidinv.face.transfer import EditTransfer, appearance_weight
from vidinv.frame import Frame


class DetectLandmarks:
    """Finds the faces of each frame: ``extras[FACES]`` (all, largest first), ``landmarks``
    (the largest) and ``face_found``.

    Args:
        detector: a :class:`LandmarkDetector` or a backend name (``"mediapipe"``, ``"dlib"``);
            a name is created lazily with ``options``. The detector is reset at the start of
            every clip (each call of the stage).
    """

    latency = 0

    def __init__(self, detector: LandmarkDetector | str = "mediapipe", **options) -> None:
        if isinstance(detector, str):
            detector = create_landmark_detector(detector, **options)
        elif options:
            raise TypeError("options only apply when the detector is given by name")
        self.detector = detector

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        self.detector.reset()
        for frame in frames:
            faces = self.detector.detect(frame.image)
            frame.extras[FACES] = faces
            frame.landmarks = faces[0] if faces else None
            frame.face_found = bool(faces)
            yield frame


class TrackFace:
    """Follows one face (see :class:`FaceTracker`) and bridges gaps of ≤ ``max_gap`` frames.

    Sets ``landmarks``, ``face_found`` and ``extras[CROP_QUAD]`` (the FFHQ crop of the followed
    face, ``crop_scale`` times FFHQ's size); bridged frames get interpolated ones and
    ``extras[BRIDGED]``. Latency: ``max_gap`` frames. To choose among several faces, the
    detector must return them (``DetectLandmarks(..., max_faces=2)`` or more).
    """

    def __init__(self, target: Target = "largest", *, max_gap: int = 5, max_jump: float = 0.5,
                 reacquire_after: int = 15, crop_scale: float = 1.0) -> None:
        self.target = target
        self.max_gap = int(max_gap)
        self.max_jump = float(max_jump)
        self.reacquire_after = int(reacquire_after)
        self.crop_scale = float(crop_scale)

    @property
    def latency(self) -> int:
        return self.max_gap

    def _select(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        tracker = FaceTracker(self.target, max_jump=self.max_jump,
                              reacquire_after=self.reacquire_after)
        for frame in frames:
            faces = frame.extras.get(FACES)
            if faces is None:
                faces = [frame.landmarks] if frame.landmarks is not None else []
            face = tracker.update(faces)
            frame.landmarks = face
            frame.face_found = face is not None
            if face is not None:
                frame.extras[CROP_QUAD] = quad_from_landmarks(face, scale=self.crop_scale)
            else:
                frame.extras.pop(CROP_QUAD, None)
            yield frame

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        return bridge_gaps(self._select(frames), self.max_gap)


def _frame_quad(frame: Frame) -> CropQuad | None:
    if not frame.face_found:
        return None
    quad = frame.extras.get(CROP_QUAD)
    if quad is None and frame.landmarks is not None:
        quad = quad_from_landmarks(frame.landmarks)
    return quad


class SmoothCrop:
    """Smooths the crop (c, x, y) over time: ``extras[CROP_QUAD]`` becomes the smoothed quad
    (the input is kept as ``extras[CROP_QUAD_RAW]``).

    Modes:
        ``"none"``: pass through (latency 0).
        ``"causal"``: ``causal_filter`` = ``"one_euro"`` (default; ``min_cutoff`` Hz, ``beta``
            in Hz per half-face-size per second) or ``"ema"`` (``alpha``); latency 0.
        ``"centred"``: Gaussian window, ``sigma_centre`` frames on c and ``sigma_axes`` on x, y
            (STIT: 1 and 3), over runs of frames with a face, ends reflected; latency
            ``radius`` (default ⌈3·max σ⌉).
    Causal filters restart after a frame without a face; the window never reaches across one.
    """

    def __init__(
        self,
        mode: Literal["none", "causal", "centred"] = "causal",
        *,
        causal_filter: Literal["one_euro", "ema"] = "one_euro",
        min_cutoff: float = 1.0,
        beta: float = 2.0,
        alpha: float = 0.5,
        sigma_centre: float = 1.0,
        sigma_axes: float = 3.0,
        radius: int | None = None,
        fps: float = 30.0,
    ) -> None:
        if mode not in ("none", "causal", "centred"):
            raise ValueError(f"mode must be 'none', 'causal' or 'centred', not {mode!r}")
        if causal_filter not in ("one_euro", "ema"):
            raise ValueError(f"causal_filter must be 'one_euro' or 'ema', not {causal_filter!r}")
        self.mode = mode
        self.causal_filter = causal_filter
        self.min_cutoff, self.beta, self.alpha, self.fps = min_cutoff, beta, alpha, fps
        self.sigmas = quad_sigmas(sigma_centre, sigma_axes)
        self._radius = radius

    @property
    def latency(self) -> int:
        if self.mode != "centred":
            return 0
        return CentredGaussianWindow(self.sigmas, self._radius).radius

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        if self.mode == "none":
            return iter(frames)
        if self.mode == "causal":
            return self._causal(frames)
        return self._centred(frames)

    def _causal(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        smoother = (OneEuroFilter(self.min_cutoff, self.beta, fps=self.fps)
                    if self.causal_filter == "one_euro" else EmaFilter(self.alpha))
        for frame in frames:
            quad = _frame_quad(frame)
            if quad is None:
                smoother.reset()
                yield frame
                continue
            vector = quad.to_vector()
            scale = float(np.linalg.norm(vector[AXES][:2]))
            time = frame.time if frame.time is not None else frame.index / self.fps
            frame.extras[CROP_QUAD_RAW] = quad
            frame.extras[CROP_QUAD] = CropQuad.from_vector(smoother(vector, time, scale))
            yield frame

    def _centred(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        window: CentredGaussianWindow[Frame] = CentredGaussianWindow(self.sigmas, self._radius)

        def finish(pairs: list[tuple[Frame, np.ndarray]]) -> Iterator[Frame]:
            for done, vector in pairs:
                done.extras[CROP_QUAD] = CropQuad.from_vector(vector)
                yield done

        for frame in frames:
            quad = _frame_quad(frame)
            if quad is None:
                yield from finish(window.end_run())
                yield frame
                continue
            frame.extras[CROP_QUAD_RAW] = quad
            yield from finish(window.push(frame, quad.to_vector()))
        yield from finish(window.end_run())


class AlignFace:
    """Cuts the S×S FFHQ crop: sets ``aligned`` [S,S,3] uint8, ``crop_from_frame`` and
    ``extras[CROP_SIZE]``. Uses ``extras[CROP_QUAD]`` (else the landmarks). Latency 0."""

    latency = 0

    def __init__(self, size: int = 256, *, padding: Padding = "blur",
                 interpolation: Interpolation = "linear") -> None:
        self.size = int(size)
        self.padding = padding
        self.interpolation = interpolation

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            quad = _frame_quad(frame)
            if quad is not None:
                frame.aligned, frame.crop_from_frame = align_from_quad(
                    frame.image, quad, self.size, padding=self.padding,
                    interpolation=self.interpolation)
                frame.extras[CROP_SIZE] = self.size
            yield frame


PasteMode = Literal["transfer", "render"]
PASTE_MODES = ("transfer", "render")


class PasteBack:
    """Puts the edit back into ``image`` where ``crop_from_frame`` says.

    ``mode="render"`` blends ``rendered`` (or another face field, ``source``) in with the
    feathered mask (:class:`~vidinv.face.paste.FacePaster`: ``mask``, ``erode``, ``feather``,
    ``color_match``). ``mode="transfer"`` moves the frame's own pixels by the motion from
    ``reconstruction`` to ``rendered`` (:class:`~vidinv.face.transfer.EditTransfer`), so the
    output keeps the source's detail and an unedited face comes back unchanged; it needs both
    fields (:class:`~vidinv.stages.model.RenderFaces` with ``with_reconstruction``).

    Frames without a face or without a rendered face pass through unchanged. The frame's
    ``image`` is replaced by a new array (the decoder's buffer is never written). Latency 0.
    """

    latency = 0

    def __init__(self, mask: MaskKind = "ellipse", *, erode: float = 0.02,
                 feather: float = 0.04, color_match: ColorMatch = None,
                 source: Literal["rendered", "aligned"] = "rendered",
                 mode: PasteMode = "render") -> None:
        if mode not in PASTE_MODES:
            raise ValueError(f"paste mode must be one of {', '.join(PASTE_MODES)}, not {mode!r}")
        self.paster = FacePaster(mask, erode=erode, feather=feather, color_match=color_match)
        self.source = source
        self.mode = mode
        self.transfer = EditTransfer() if mode == "transfer" else None

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            face = getattr(frame, self.source)
            if not (frame.face_found and face is not None and frame.crop_from_frame is not None):
                yield frame
                continue
            if self.transfer is not None:
                if frame.reconstruction is None:
                    raise ValueError("transfer paste needs frame.reconstruction: render with "
                                     "RenderFaces(with_reconstruction=True)")
                size = self.transfer.flow_size
                crop_size = frame.extras.get(CROP_SIZE, _as_uint8_image(face).shape[0])
                crop_from_frame = (np.diag([size / crop_size, size / crop_size, 1.0])
                                   @ frame.crop_from_frame)
                mask = self.paster.mask_for(size, crop_from_frame, frame.landmarks)
                rebuilt = _as_uint8_image(frame.reconstruction)
                # on a face the model does not know (R is not the source), motion only
                known = (1.0 if frame.aligned is None
                         else appearance_weight(frame.aligned, rebuilt))
                frame.image = self.transfer(frame.image, _as_uint8_image(face), rebuilt,
                                            frame.crop_from_frame, crop_size, mask,
                                            appearance=known)
            else:
                frame.image = self.paster(
                    frame.image, _as_uint8_image(face), frame.crop_from_frame,
                    crop_size=frame.extras.get(CROP_SIZE), landmarks=frame.landmarks)
            yield frame


def _as_uint8_image(face: object) -> np.ndarray:
    """[S,S,3] uint8 from a numpy image or a torch [3,S,S] float tensor in [-1, 1]."""
    if isinstance(face, np.ndarray):
        if face.dtype == np.uint8:
            return face
        array = face
    else:  # a torch tensor
        array = face.detach().float().cpu().numpy()  # type: ignore[attr-defined]
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = np.transpose(array, (1, 2, 0))
    if array.dtype != np.uint8:
        array = np.clip(np.rint((array + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


class RequireFace:
    """Passes frames through and raises :class:`NoFaceError` at the end of a clip in which no
    frame had a face. Put it after DetectLandmarks/TrackFace; latency 0.

    Args:
        source: the file or camera named in the message.
    """

    latency = 0

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        return require_face(frames, self.source)


def no_face_error(source: str, frames: int | None = None) -> NoFaceError:
    seen = f" (in {frames} frame{'s' if frames != 1 else ''})" if frames is not None else ""
    return NoFaceError(
        f"no face found in {source}{seen}; use a clip where a face is visible and at least "
        "~40 px wide, or try the other landmark backend ('mediapipe' or 'dlib')")


def require_face(frames: Iterable[Frame], source: str) -> Iterator[Frame]:
    """Yield ``frames`` unchanged; raise :class:`NoFaceError` at the end if none had a face."""
    count = 0
    found = False
    for frame in frames:
        count += 1
        found = found or bool(frame.face_found)
        yield frame
    if not found:
        raise no_face_error(source, count)


def find_first_face(images: Iterable[np.ndarray], detector: LandmarkDetector | str, source: str,
                    *, max_frames: int | None = None) -> tuple[int, list]:
    """Look for a face before committing to a long run: the index of the first image with a face
    and its faces (largest first). Raises :class:`NoFaceError` naming ``source`` when none of
    the (first ``max_frames``) images has one."""
    if isinstance(detector, str):
        detector = create_landmark_detector(detector)
    detector.reset()
    count = 0
    for index, image in enumerate(images):
        if max_frames is not None and index >= max_frames:
            break
        count += 1
        faces = detector.detect(image)
        if faces:
            return index, faces
    raise no_face_error(source, count)
