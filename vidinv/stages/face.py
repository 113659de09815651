"""The face stages of the pipeline: each maps an iterator of Frames to an iterator of Frames.

    DetectLandmarks → TrackFace → SmoothCrop → AlignFace → (encode, edit, render) → PasteBack

``latency`` is how many frames a stage holds back. Frames without a face (``face_found`` False)
pass through every stage unchanged; no stage drops or adds frames. Results go into the Frame's
fields (``faces``, ``landmarks``, ``face_found``, ``crop_quad``, ``crop_quad_raw``, ``bridged``,
``crop_from_frame``, ``crop_size``, ``aligned``, ``image``; see :class:`~vidinv.frame.Frame`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from vidinv.config import ColorMatch, FaceMask, PasteMode, Smoothing
from vidinv.face.align import CropQuad, Interpolation, Padding, align_from_quad, quad_from_landmarks
from vidinv.face.errors import NoFaceError
from vidinv.face.identities import FaceChoice, FaceDescriber, FaceSelector, IdentityTracker
from vidinv.face.landmarks import LandmarkDetector, create_landmark_detector
from vidinv.face.paste import FacePaster
from vidinv.face.smoothing import (
    AXES,
    CentredGaussianWindow,
    EmaFilter,
    FilterPerFace,
    OneEuroFilter,
    quad_sigmas,
    smooth_each_face_centred,
)
from vidinv.face.track import FaceTracker, Target, bridge_gaps
from vidinv.face.transfer import EditTransfer
from vidinv.frame import FaceLandmarks, FaceSlot, Frame


class DetectLandmarks:
    """Finds the faces of each frame: ``faces`` (all, largest first), ``landmarks``
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
            frame.faces = faces
            frame.landmarks = faces[0] if faces else None
            frame.face_found = bool(faces)
            yield frame


class TrackFace:
    """Chooses the faces to edit, gives each a :class:`~vidinv.frame.FaceSlot` in
    ``frame.slots`` with its ``landmarks`` and ``crop_quad`` (the FFHQ crop, ``crop_scale``
    times FFHQ's size), sets ``face_found``, and bridges gaps of ≤ ``max_gap`` frames per face
    (bridged slots get interpolated crops and ``bridged``). Latency: ``max_gap`` frames.

    ``choice`` (a :class:`~vidinv.face.identities.FaceChoice`): ``largest`` (default) follows
    one face, chosen by ``target`` (see :class:`FaceTracker`); ``all``, an index from the left
    or a reference descriptor track every face as an identity
    (:class:`~vidinv.face.identities.IdentityTracker`) and edit the chosen ones. To choose
    among several faces the detector must return them (``DetectLandmarks(..., max_faces=8)``).
    """

    def __init__(self, target: Target = "largest", *, choice: FaceChoice | None = None,
                 max_gap: int = 5, max_jump: float = 0.5, reacquire_after: int = 15,
                 crop_scale: float = 1.0, describer: FaceDescriber | None = None) -> None:
        self.target = target
        self.choice = choice if choice is not None else FaceChoice()
        self.max_gap = int(max_gap)
        self.max_jump = float(max_jump)
        self.reacquire_after = int(reacquire_after)
        self.crop_scale = float(crop_scale)
        self.describer = describer

    @property
    def latency(self) -> int:
        return self.max_gap

    def _slot(self, identity: int, face: FaceLandmarks) -> FaceSlot:
        return FaceSlot(identity=identity, landmarks=face,
                        crop_quad=quad_from_landmarks(face, scale=self.crop_scale))

    def _follow_one(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        tracker = FaceTracker(self.target, max_jump=self.max_jump,
                              reacquire_after=self.reacquire_after)
        for frame in frames:
            face = tracker.update(_detections(frame))
            frame.slots = [self._slot(0, face)] if face is not None else []
            frame.face_found = face is not None
            yield frame

    def _follow_identities(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        tracker = IdentityTracker(self.describer or FaceDescriber(), max_jump=self.max_jump)
        selector = FaceSelector(self.choice, tracker)
        for position, frame in enumerate(frames):
            tracked = tracker.update(position, frame.image, _detections(frame))
            frame.slots = [self._slot(identity, face)
                           for identity, face in selector.choose(frame.index, tracked)]
            frame.face_found = bool(frame.slots)
            yield frame
        selector.check_found()

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        follow = self._follow_identities if self.choice.multi else self._follow_one
        return bridge_gaps(follow(frames), self.max_gap)


def _detections(frame: Frame) -> list[FaceLandmarks]:
    """The frame's detected faces (``faces``, else the one ``landmarks``)."""
    if frame.faces is not None:
        return frame.faces
    return [frame.landmarks] if frame.landmarks is not None else []


def _face_quads(frame: Frame) -> list[tuple[FaceSlot, CropQuad]]:
    """Each face of the frame with its crop (the landmarks' when TrackFace set none); none
    unless ``face_found``."""
    if not frame.face_found:
        return []
    pairs = [(slot, slot.crop_quad if slot.crop_quad is not None
              else quad_from_landmarks(slot.landmarks) if slot.landmarks is not None else None)
             for slot in frame.slots]
    return [(slot, quad) for slot, quad in pairs if quad is not None]


class SmoothCrop:
    """Smooths the crop (c, x, y) over time: ``crop_quad`` becomes the smoothed quad
    (the input is kept as ``crop_quad_raw``).

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
        mode: Smoothing = "causal",
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
        if mode not in typing.get_args(Smoothing):
            raise ValueError(f"mode must be one of {', '.join(typing.get_args(Smoothing))}, "
                             f"not {mode!r}")
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
        smoothers = FilterPerFace(lambda: OneEuroFilter(self.min_cutoff, self.beta, fps=self.fps)
                                  if self.causal_filter == "one_euro" else EmaFilter(self.alpha))
        for frame in frames:
            faces = _face_quads(frame)
            smoothers.keep_only(slot.identity for slot, _ in faces)
            for slot, quad in faces:
                vector = quad.to_vector()
                scale = float(np.linalg.norm(vector[AXES][:2]))
                time = frame.time if frame.time is not None else frame.index / self.fps
                slot.crop_quad_raw = quad
                slot.crop_quad = CropQuad.from_vector(
                    smoothers[slot.identity](vector, time, scale))
            yield frame

    def _centred(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        def faces_of(frame: Frame) -> list[tuple[FaceSlot, np.ndarray]]:
            faces = _face_quads(frame)
            for slot, quad in faces:
                slot.crop_quad_raw = quad
            return [(slot, quad.to_vector()) for slot, quad in faces]

        def finish(slot: FaceSlot, vector: np.ndarray) -> None:
            slot.crop_quad = CropQuad.from_vector(vector)

        return smooth_each_face_centred(
            frames, faces_of, lambda _: CentredGaussianWindow(self.sigmas, self._radius), finish)


class AlignFace:
    """Cuts the S×S FFHQ crop: sets ``aligned`` [S,S,3] uint8, ``crop_from_frame`` and
    ``crop_size``. Uses ``crop_quad`` (else the landmarks). Latency 0."""

    latency = 0

    def __init__(self, size: int = 256, *, padding: Padding = "blur",
                 interpolation: Interpolation = "linear") -> None:
        self.size = int(size)
        self.padding = padding
        self.interpolation = interpolation

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            for slot, quad in _face_quads(frame):
                slot.aligned, slot.crop_from_frame = align_from_quad(
                    frame.image, quad, self.size, padding=self.padding,
                    interpolation=self.interpolation)
                slot.crop_size = self.size
            yield frame


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

    def __init__(self, mask: FaceMask = "ellipse", *, erode: float = 0.02,
                 feather: float = 0.04, color_match: ColorMatch = "none",
                 source: Literal["rendered", "aligned"] = "rendered",
                 mode: PasteMode = "render") -> None:
        if mode not in typing.get_args(PasteMode):
            raise ValueError(f"paste mode must be one of {', '.join(typing.get_args(PasteMode))}"
                             f", not {mode!r}")
        self.paster = FacePaster(mask, erode=erode, feather=feather, color_match=color_match)
        self.source = source
        self.mode = mode
        self.transfer = EditTransfer() if mode == "transfer" else None

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.face_found:
                for slot in frame.slots:
                    frame.image = self._paste(frame.image, slot)
            yield frame

    def _paste(self, image: np.ndarray, slot: FaceSlot) -> np.ndarray:
        """``image`` with one face's edit put back (``image`` itself when it has none)."""
        face = getattr(slot, self.source)
        if face is None or slot.crop_from_frame is None:
            return image
        if self.transfer is None:
            return self.paster(image, _as_uint8_image(face), slot.crop_from_frame,
                               crop_size=slot.crop_size, landmarks=slot.landmarks)
        if slot.reconstruction is None:
            raise ValueError("transfer paste needs the reconstruction: render with "
                             "RenderFaces(with_reconstruction=True)")
        size = self.transfer.flow_size
        crop_size = (slot.crop_size if slot.crop_size is not None
                     else _as_uint8_image(face).shape[0])
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ slot.crop_from_frame
        mask = self.paster.mask_for(size, crop_from_frame, slot.landmarks)
        return self.transfer(image, _as_uint8_image(face), _as_uint8_image(slot.reconstruction),
                             slot.crop_from_frame, crop_size, mask)


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

