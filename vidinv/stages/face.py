"""The face stages of the pipeline: each maps an iterator of Frames to an iterator of Frames.

    DetectLandmarks → TrackFace → SmoothCrop → AlignFace → (encode, edit, render) → PasteBack

``latency`` is how many frames a stage holds back. Frames without a face (``face_found`` False)
pass through every stage unchanged; no stage drops or adds frames. Results go into the Frame's
fields (``faces``, ``landmarks``, ``face_found``, ``crop_quad``, ``crop_quad_raw``, ``bridged``,
``crop_from_frame``, ``crop_size``, ``aligned``, ``image``; see :class:`~vidinv.frame.Frame`).
"""

from __future__ import annotations

import math
import typing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np

from vidinv.config import ColorMatch, FaceMask, PasteMode, Smoothing
from vidinv.face.align import (
    CropQuad,
    Interpolation,
    Padding,
    align_from_quad,
    cv_inverse_map,
    quad_from_landmarks,
)
from vidinv.face.appearance import MouthInside, expression_paint
from vidinv.face.errors import NoFaceError
from vidinv.face.expressions import DRAWN_KINDS, action_field
from vidinv.face.identities import FaceChoice, FaceDescriber, FaceSelector, IdentityTracker
from vidinv.face.keyframes import (
    KeyFrameChooser,
    crop_landmarks,
    crop_points,
)
from vidinv.face.landmarks import (
    LandmarkDetector,
    box_area,
    box_iou,
    create_landmark_detector,
)
from vidinv.face.occlusion import EditFade, OcclusionDetector
from vidinv.face.paste import FacePaster, frame_box, paste_back
from vidinv.face.regions import is_whole_face, region_mask
from vidinv.face.smoothing import (
    AXES,
    CentredGaussianWindow,
    EmaFilter,
    FilterPerFace,
    OneEuroFilter,
    quad_sigmas,
    smooth_each_face_centred,
)
from vidinv.face.symmetry import symmetrized
from vidinv.face.track import FaceTracker, Target, bridge_gaps
from vidinv.face.transfer import EditField, EditTransfer, Painter, appearance_weight
from vidinv.frame import MESH_POINTS, FaceLandmarks, FaceSlot, Frame


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


class ChooseKeyFrames:
    """Marks the faces between key frames ``carried`` (see :mod:`vidinv.face.keyframes`):
    the encoder and the render skip them and the transfer paste carries the last key frame's
    edit field to them. Each identity has its own key frames: the first frame of its run, a
    frame whose landmarks moved more than ``motion`` inter-ocular distances in the crop since
    its last key frame beyond what an affine map of the whole face explains, and at least
    every ``every`` frames. Needs ``crop_from_frame`` (after AlignFace). Latency 0 (the
    stages after it batch and smooth key frames only, so they hold up to ``every`` times
    their own latency in frames)."""

    latency = 0

    def __init__(self, motion: float = 0.08, every: int = 4) -> None:
        self.motion = float(motion)
        self.every = int(every)

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        chooser = KeyFrameChooser(self.motion, self.every)
        for frame in frames:
            faces = [slot for slot in frame.slots if slot.crop_from_frame is not None
                     and frame.face_found]
            chooser.keep_only({slot.identity for slot in faces})
            for slot in faces:
                points = (None if slot.landmarks is None
                          else crop_landmarks(slot.landmarks, slot.crop_from_frame))
                slot.carried = not chooser.is_key(slot.identity, points)
            yield frame


#: Side of ``Frame.edit_mask``.
EDIT_MASK_SIZE = 128
#: A face more covered than this counts as lost for the fade.
LOST_WHEN_COVERED = 0.5
#: A face covered by more than this when it goes or comes back is going behind something or
#: coming out from behind it (no fade: the covered map already hides the edit there).
PARTLY_COVERED = 0.15


#: Fractions of a face's landmark box inside the frame between which its edit ramps linearly
#: from 0 to 1 (:func:`inside_weight`).
INSIDE_RAMP = (0.25, 1.0)


def inside_weight(box: tuple[float, float, float, float], frame_shape: tuple[int, ...]) -> float:
    """How strongly the edit of a face with landmark ``box`` (x0, y0, x1, y1, frame pixels)
    shows: 1 while the box is in the frame, down to 0 as the face goes out through the frame's
    border (linear in the box's area inside, between the :data:`INSIDE_RAMP` fractions). A face
    half out of the picture is cut off in the model's crop, whose edit of it is unreliable, and
    it enters or leaves in a few frames: tied to the part in view, the edit comes and goes with
    the face, where a detection that starts or stops would make it pop."""
    height, width = frame_shape[:2]
    x0, y0, x1, y1 = box
    inside = box_area((max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)))
    low, high = INSIDE_RAMP
    return min(max((inside / max(box_area(box), 1e-12) - low) / (high - low), 0.0), 1.0)


def clear_of_border(face: FaceLandmarks, frame_shape: tuple[int, ...], *,
                    border: float = 0.25) -> bool:
    """Whether a face's box stands ``border`` face sizes inside the frame's border. With
    :func:`clear_of_others`, a face in the open: where a face that is lost from one frame to
    the next was really lost, not gone out of the picture or behind someone."""
    x0, y0, x1, y1 = face.box
    margin = border * _face_size(face)
    height, width = frame_shape[:2]
    return not (x0 < margin or y0 < margin or x1 > width - margin or y1 > height - margin)


def clear_of_others(face: FaceLandmarks, others: Iterable[FaceLandmarks], *,
                    reach: float = 1.0) -> bool:
    """Whether a face's box is at least ``reach`` face sizes from every other face's box: not
    about to go behind someone, or just come out from behind them."""
    x0, y0, x1, y1 = face.box
    size = _face_size(face)
    for other in others:
        if other is face or box_iou(other.box, face.box) > 0.9:  # the face itself
            continue
        ox0, oy0, ox1, oy1 = other.box
        gap = max(ox0 - x1, x0 - ox1, oy0 - y1, y0 - oy1)
        if gap < reach * size:
            return False
    return True


def _face_size(face: FaceLandmarks) -> float:
    x0, y0, x1, y1 = face.box
    return math.sqrt(max((x1 - x0) * (y1 - y0), 1.0))


class MaskEdit:
    """Where and how strongly the edit shows: sets each face's ``edit_mask`` [M,M] float32 in
    [0,1] in its crop's geometry (M = :data:`EDIT_MASK_SIZE`; 1 = the edit shows, 0 = the
    source's pixels).

    It is the product of the ``regions`` mask (:func:`~vidinv.face.regions.region_mask`), one
    minus the covered map (:class:`~vidinv.face.occlusion.OcclusionDetector`, with
    ``occlusion``) and the face's fade weight (:class:`~vidinv.face.occlusion.EditFade`). Each
    face (identity) has its own detector and its own fade, so one face lost dims no other.
    A face is lost in a frame where it is more than half covered, where it vanishes in the
    open (:func:`clear_of_border` and :func:`clear_of_others`, and not partly covered), and
    before it comes back in the open or through the frame's border; its edit ramps to 0 over
    the ``fade_frames`` around such a frame. A face that leaves through the frame's border
    or goes behind someone (or comes back from behind them) does not fade: its edit goes with
    the part of it still in the picture (:func:`inside_weight`), or the covered map hides it.
    Offline the ramp is two-sided (latency
    ``fade_frames``); ``live`` makes it causal (latency 0: the edit fades back in after a
    loss). Frames without a face pass through.
    """

    def __init__(self, regions: tuple[str, ...] = ("face",), *, occlusion: bool = True,
                 fade_frames: int = 5, live: bool = False) -> None:
        self.regions = tuple(regions)
        self.occlusion = bool(occlusion)
        self.fade_frames = int(fade_frames)
        self.live = bool(live)

    @property
    def latency(self) -> int:
        return 0 if self.live else self.fade_frames

    def _mask(self, slot: FaceSlot, detector: OcclusionDetector | None,
              frame_shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
        """One face's mask ([M,M] float32) and the fraction of it that is covered."""
        size = EDIT_MASK_SIZE
        crop_size = slot.crop_size or size
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ slot.crop_from_frame
        if is_whole_face(self.regions) or slot.landmarks is None:
            mask = np.ones((size, size), np.float32)
        else:
            mask = region_mask(size, slot.landmarks, crop_from_frame, self.regions)
        covered_fraction = 0.0
        if detector is not None and slot.aligned is not None:
            covered = detector.update(slot.aligned, slot.landmarks, slot.crop_from_frame,
                                      frame_shape)
            mask *= 1.0 - cv2.resize(covered, (size, size), interpolation=cv2.INTER_LINEAR)
            covered_fraction = detector.covered_fraction
        if slot.landmarks is not None:
            mask *= np.float32(inside_weight(slot.landmarks.box, frame_shape))
        return mask, covered_fraction

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        detectors: dict[int, OcclusionDetector] = {}
        fades: dict[int, EditFade] = {}   # identity -> its fade (while it has frames held)
        gone_since: dict[int, int] = {}   # identity -> first position of its absence
        last_open: dict[int, bool] = {}   # identity -> in the open in the last frame it was in
        held: deque[tuple[int, Frame]] = deque()
        ready: dict[int, dict[int, float]] = {}  # position -> identity -> weight

        def record(identity: int, weights: Callable[[EditFade], list[float]]) -> None:
            """Note the weights that ``weights(fade)`` gives of this face's held frames."""
            fade = fades[identity]
            first = fade.next_given
            for offset, weight in enumerate(weights(fade)):
                ready.setdefault(first + offset, {})[identity] = weight

        def push(identity: int, state: bool | None) -> None:
            record(identity, lambda fade: fade.push(state))

        def give(until: int) -> Iterator[Frame]:
            while held and held[0][0] <= until:
                position, done = held.popleft()
                weights = ready.pop(position, {})
                for slot in done.slots:
                    if slot.edit_mask is not None:
                        slot.edit_mask = slot.edit_mask * np.float32(
                            weights.get(slot.identity, 0.0))
                yield done

        position = -1
        for position, frame in enumerate(frames):
            faces = ([slot for slot in frame.slots if slot.crop_from_frame is not None]
                     if frame.face_found else [])
            for slot in faces:
                identity = slot.identity
                detector = None
                if self.occlusion:
                    detector = detectors.setdefault(identity, OcclusionDetector())
                slot.edit_mask, covered = self._mask(slot, detector, frame.image.shape)
                face = slot.landmarks
                clear = covered <= PARTLY_COVERED and (
                    face is None or clear_of_others(face, _detections(frame)))
                open_now = clear and (face is None or clear_of_border(face, frame.image.shape))
                # a face that appears (after the first frame) or comes back, in the open or
                # through the frame's border, fades in; one that comes out from behind
                # something or someone does not (the covered map already hides its edit)
                appears = identity in gone_since or (identity not in fades and position > 0)
                if identity not in fades:
                    fades[identity] = EditFade(self.fade_frames, 0 if self.live else None,
                                               start=position)
                if appears and clear:
                    fades[identity].lost_before()  # the edit fades in
                gone_since.pop(identity, None)
                last_open[identity] = open_now
                push(identity, covered <= LOST_WHEN_COVERED)
            present = {slot.identity for slot in faces}
            for identity in [i for i in fades if i not in present]:
                if identity in detectors:
                    detectors[identity].lost()
                if identity not in gone_since:
                    # gone in the open: a loss the edit fades out before; else no ramp
                    gone_since[identity] = position
                    push(identity, False if last_open[identity] else None)
                else:
                    push(identity, None)
                if position - gone_since[identity] > 2 * self.fade_frames + 1:
                    del fades[identity]  # all its frames given; a new fade if it comes back
            held.append((position, frame))
            yield from give(position - self.latency)
        for identity in fades:
            record(identity, EditFade.finish)
        yield from give(position)


#: How much of a face's previous edit field a new key frame's keeps (:class:`PasteBack`). On
#: the face-pops clips (scripts/face_pops.py, smile 3) the face's warping error over the
#: source's was 1.18 (crossing) and 1.87 (three) with none, 1.12–1.55 over all five clips with
#: 0.5 and 1.09–1.42 with 0.7; with 0.7, the carried frames interpolated, the edit going with
#: the part of a face in the picture and symmetric edits: 1.06–1.11, and three (a still photo
#: sliding fast out of the frame and back) 1.22. The price is that a change of the edit's
#: field settles over about three key frames (the field is moved with the face's landmarks,
#: so the face's own motion does not lag).
FIELD_MEMORY = 0.7


def blend_fields(new: EditField | None, old: EditField | None, memory: float
                 ) -> EditField | None:
    """``(1 − memory)·new + memory·old`` (flow, brightness and paint, all [U,U,·] in the same
    crop geometry). A None field (E equals R: the edit moves nothing, as at strength 0) is never
    blended, nor blended into: strength 0 stays the input bit for bit, and an edit that starts
    starts at once."""
    if new is None or old is None or memory == 0.0:
        return new
    keep = np.float32(memory)
    return EditField(_mixed(new.flow, old.flow, keep),
                     _mixed(new.brightness, old.brightness, keep),
                     _mixed(new.paint, old.paint, keep))


def _mixed(new: np.ndarray | None, old: np.ndarray | None, keep: np.float32
           ) -> np.ndarray | None:
    """``(1 − keep)·new + keep·old`` (float32 layers of one shape); a missing one counts as
    zero (a paint layer that starts or ends fades like the motion), both missing: None."""
    if new is None and old is None:
        return None
    if new is None:
        new = np.zeros_like(old)
    if old is None:
        old = np.zeros_like(new)
    return (new * (np.float32(1) - keep) + old * keep).astype(np.float32)


class PasteBack:
    """Puts the edit back into ``image`` where ``crop_from_frame`` says.

    ``mode="render"`` blends ``rendered`` (or another face field, ``source``) in with the
    feathered mask (:class:`~vidinv.face.paste.FacePaster`: ``mask``, ``erode``, ``feather``,
    ``color_match``). ``mode="transfer"`` moves the frame's own pixels by the motion from
    ``reconstruction`` to ``rendered`` (:class:`~vidinv.face.transfer.EditTransfer`), so the
    output keeps the source's detail and an unedited face comes back unchanged; it needs both
    fields (:class:`~vidinv.stages.model.RenderFaces` with ``with_reconstruction``).

    A frame's ``edit_mask`` (:class:`MaskEdit`) multiplies the paste's mask, so the edit's
    motion stops where it is 0; as a final step the source's pixels are put back wherever the
    edit mask is 0, whatever the paste did (all zeros: the frame passes through).

    With ``carry`` (transfer only; :class:`ChooseKeyFrames` upstream), the edit field of each
    face's last key frame (:meth:`~vidinv.face.transfer.EditTransfer.field`, in the aligned
    crop's geometry) is applied to its ``carried`` frames through their own crop transform
    and their own masks, so it follows the face; a face's field is forgotten when it leaves.

    In transfer mode each face's new field is blended with its previous one, moved with the
    face (``field_memory`` of the old, :func:`blend_fields`): optical flow between two soft
    renders is measured afresh on every key frame and its errors flicker from one to the next
    (the face region's warping error rose 10–30 % over the source's on the real clip); the
    edit itself changes slowly (its codes are smoothed over time), so little is lost. (Kept
    per key period instead, i.e. more of it when key frames come close together because the
    face moves, the field lagged the expression: the held-out brows moved 20 % less.)

    With ``interpolate`` (offline, with ``carry``), a carried frame waits for its face's next
    key frame and its field is the two key fields around it, each moved with the face, mixed
    by the frame's place between them: a change of the edit's field is spread over the frames
    between key frames instead of showing at once on the next key frame, where, on the face-
    pops clips, each key frame's jump made the face region's warping error 1.5–1.8 × the
    source's (carried frames: 1.01). Without it (``live``: no look-ahead), the last key
    field is held.

    With ``symmetric`` (a bool, or a callable asked on each key frame: the edits in force may
    change, as in ``live``), a key frame's field is averaged with its mirror image about the
    face's midline (:mod:`vidinv.face.symmetry`; MediaPipe landmarks only): a smile lifts
    both corners of the mouth, not one.

    With ``actions`` (a callable asked on each key frame: the expressions the edits in force
    were taught and their amounts, :func:`~vidinv.face.expressions.edit_actions`, or None),
    a key frame's flow is those expressions' motion fields at the face's own mesh points, each
    scaled by how far the model's edit goes along it
    (:func:`~vidinv.face.transfer.fit_actions`), instead of optical flow between E and R
    (MediaPipe landmarks only; such a field is as symmetric as its expression); the eyes' fields
    (gaze, closing, widening: :data:`~vidinv.face.expressions.DRAWN_KINDS`) are applied at the
    amount asked, since a small model's irises and lids are too small to read. With ``draw``
    too, the field carries what those expressions show beyond motion, drawn on the source's
    own crop where the output's geometry puts it (:func:`~vidinv.face.appearance.
    expression_paint`: teeth where the lips part and the source's mouth was closed, a smile's
    folds) — on any face, since it is drawn from the face's own landmarks and skin, not the
    model's render. ``mouth_inside`` ([h,w,3] uint8: the person's own open mouth, from the
    model folder) gives the teeth on faces the model knows (its person's); elsewhere they are
    synthesised.

    Frames without a face or without a rendered face pass through unchanged. The frame's
    ``image`` is replaced by a new array (the decoder's buffer is never written). Latency 0,
    or with ``interpolate`` up to :data:`KEY_EVERY_BOUND` frames.
    """

    def __init__(self, mask: FaceMask = "ellipse", *, erode: float = 0.02,
                 feather: float = 0.04, color_match: ColorMatch = "none",
                 source: Literal["rendered", "aligned"] = "rendered",
                 mode: PasteMode = "render", carry: bool = False,
                 interpolate: bool = False, field_memory: float = FIELD_MEMORY,
                 symmetric: Callable[[], bool] | bool = False,
                 actions: Callable[[], dict[str, float] | None] | None = None,
                 draw: bool = True, mouth_inside: np.ndarray | None = None) -> None:
        if mode not in typing.get_args(PasteMode):
            raise ValueError(f"paste mode must be one of {', '.join(typing.get_args(PasteMode))}"
                             f", not {mode!r}")
        if carry and mode != "transfer":
            raise ValueError("only the transfer paste carries an edit field between key "
                             "frames; turn key frames off (face.key_frames=false) to render")
        if interpolate and not carry:
            raise ValueError("interpolate needs carry: it blends the carried key fields")
        if not 0.0 <= field_memory < 1.0:
            raise ValueError(f"field_memory must be in [0, 1), not {field_memory}")
        self.carry = bool(carry)
        self.interpolate = bool(interpolate)
        self.field_memory = float(field_memory)
        self.symmetric = symmetric if callable(symmetric) else (lambda: bool(symmetric))
        self.actions = actions if actions is not None else (lambda: None)
        self.draw = bool(draw)
        self.mouth_inside = None if mouth_inside is None else MouthInside(mouth_inside)
        self.paster = FacePaster(mask, erode=erode, feather=feather, color_match=color_match)
        self.source = source
        self.mode = mode
        self.transfer = EditTransfer() if mode == "transfer" else None

    @property
    def latency(self) -> int:
        """Frames held at most: with ``interpolate``, a carried frame waits for its face's next
        key frame (ChooseKeyFrames makes one at least every ``every`` frames); else 0."""
        return KEY_EVERY_BOUND if self.interpolate else 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        if self.transfer is None:
            for frame in frames:
                for slot in frame.slots if frame.face_found else []:
                    frame.image = self._paste_render(frame.image, slot)
                yield frame
            return
        keys = _KeyFields()
        held: deque[Frame] = deque()
        for frame in frames:
            faces = frame.slots if frame.face_found else []
            keys.note_absent(frame.index, {slot.identity for slot in faces})
            for slot in faces:
                if not self._carried(slot):
                    key = self._measure(slot, keys.latest(slot.identity))
                    if key is not None:
                        keys.add(slot.identity, frame.index, key)
            held.append(frame)
            while held and (not self.interpolate
                            or keys.settled(held[0], self._carried, len(held))):
                yield self._release(held.popleft(), keys)
        while held:
            yield self._release(held.popleft(), keys)

    def _carried(self, slot: FaceSlot) -> bool:
        return self.carry and slot.carried

    def _release(self, frame: Frame, keys: _KeyFields) -> Frame:
        for slot in frame.slots if frame.face_found else []:
            frame.image = self._paste_transfer(frame.image, slot, keys, frame.index)
        keys.forget_before(frame.index)
        return frame

    def _geometry(self, slot: FaceSlot, crop_size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(face mask [U,U], that mask limited by the slot's edit mask, landmarks [N,2] in the
        crop at U or None) at the transfer's flow size U."""
        assert self.transfer is not None
        size = self.transfer.flow_size
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ slot.crop_from_frame
        face_mask = self.paster.mask_for(size, crop_from_frame, slot.landmarks)
        points = (None if slot.landmarks is None
                  else crop_points(slot.landmarks, crop_from_frame))
        return face_mask, _limited(face_mask, slot.edit_mask), points

    def _measure(self, slot: FaceSlot, previous: _KeyField | None) -> _KeyField | None:
        """A key frame's field (transfer mode), blended with the face's ``previous`` one moved
        here; None where the slot has no rendered face. A hidden key frame (faded out) still
        measures its field, with the face's own mask, for the carried frames that fade back in
        after it."""
        face = getattr(slot, self.source)
        if slot.crop_from_frame is None or face is None:
            return None
        crop_size = slot.crop_size if slot.crop_size is not None else _as_uint8_image(face).shape[0]
        face_mask, mask, points = self._geometry(slot, crop_size)
        hidden = slot.edit_mask is not None and not slot.edit_mask.any()
        key = self._key_field(slot, face, face_mask if hidden else mask, crop_size, points)
        if previous is not None and previous.crop_size == crop_size:
            key = replace(key, field=blend_fields(key.field, previous.followed(points),
                                                  self.field_memory))
        return key

    def _paste_transfer(self, image: np.ndarray, slot: FaceSlot, keys: _KeyFields,
                        index: int) -> np.ndarray:
        """``image`` with one face's transfer edit put back: a key frame's own field, or a
        carried frame's: its face's last key field moved with the face (with ``interpolate``,
        blended toward the next key field by the frame's place between the two)."""
        keep = slot.edit_mask
        if slot.crop_from_frame is None or (keep is not None and not keep.any()):
            return image
        before, after, weight = keys.around(slot.identity, index)
        if before is None or (not self._carried(slot) and before[0] != index):
            return image  # no field: a key frame without a rendered face, or nothing yet
        key = before[1]
        crop_size = slot.crop_size if slot.crop_size is not None else key.crop_size
        _, mask, points = self._geometry(slot, crop_size)
        appearance = key.appearance
        if after is not None and weight > 0 and after[1].crop_size == key.crop_size:
            # mixed in the first key's geometry (the next one moved there once per pair),
            # then moved with the face here: one move a frame
            toward = keys.moved_onto(slot.identity, after, before)
            key = replace(key, field=lerp_fields(key.field, toward, weight))
            appearance += weight * (after[1].appearance - appearance)
        field = key.field if before[0] == index else key.followed(points)
        if field is None:
            return image.copy()
        out = self.transfer.apply(image, field, slot.crop_from_frame, crop_size, mask,
                                  appearance=appearance)
        if keep is not None:
            keep_source_where_masked(out, image, keep, slot.crop_from_frame, slot.crop_size)
        return out

    def _paste_render(self, image: np.ndarray, slot: FaceSlot) -> np.ndarray:
        """``image`` with one face's render put back (``image`` itself when it has none),
        limited to the slot's ``edit_mask`` (region, occlusion, fade) when MaskEdit made one."""
        face = getattr(slot, self.source)
        if slot.crop_from_frame is None or face is None:
            return image
        keep = slot.edit_mask
        if keep is not None and not keep.any():
            return image
        if keep is None:
            return self.paster(image, _as_uint8_image(face), slot.crop_from_frame,
                               crop_size=slot.crop_size, landmarks=slot.landmarks)
        rendered = _as_uint8_image(face)
        size = rendered.shape[0]
        crop_size = slot.crop_size if slot.crop_size is not None else size
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ slot.crop_from_frame
        mask = _limited(self.paster.mask_for(size, crop_from_frame, slot.landmarks), keep)
        out = paste_back(image, rendered, crop_from_frame, mask,
                         color_match=self.paster.color_match)
        keep_source_where_masked(out, image, keep, slot.crop_from_frame, slot.crop_size)
        return out

    def _key_field(self, slot: FaceSlot, face: object, mask: np.ndarray,
                   crop_size: int, points: np.ndarray | None) -> _KeyField:
        """The transfer's edit field of a rendered face (None when E is R: nothing moves),
        measured through ``mask`` [U,U]; ``points`` are its landmarks in the crop at U."""
        assert self.transfer is not None
        if slot.reconstruction is None:
            raise ValueError("transfer paste needs the reconstruction: render with "
                             "RenderFaces(with_reconstruction=True)")
        edited, rebuilt = _as_uint8_image(face), _as_uint8_image(slot.reconstruction)
        if np.array_equal(edited, rebuilt):
            return _KeyField(None, 1.0, crop_size, points)
        # on a face the model does not know (R is not the source), motion only
        known = 1.0 if slot.aligned is None else appearance_weight(slot.aligned, rebuilt)
        mesh = points is not None and len(points) >= MESH_POINTS
        actions = self.actions() if mesh else None
        if actions:
            size = self.transfer.flow_size
            fields = [action_field(kind, points, amount, size)
                      for kind, amount in actions.items()]
            inside = self.mouth_inside if known >= KNOWN_FACE else None
            painter = (None if not self.draw or slot.aligned is None
                       else _painter(_as_uint8_image(slot.aligned), points, actions, inside))
            fixed = [1.0 if kind in DRAWN_KINDS else None for kind in actions]
            return _KeyField(self.transfer.field(edited, rebuilt, mask, actions=fields,
                                                 painter=painter, fixed=fixed),
                             known, crop_size, points)
        field = self.transfer.field(edited, rebuilt, mask)
        if mesh and self.symmetric():
            field = symmetrized(field, points)
        return _KeyField(field, known, crop_size, points)


#: The appearance weight (:func:`~vidinv.face.transfer.appearance_weight`) from which a face
#: counts as the model's own person, whose stored mouth inside may show its teeth.
KNOWN_FACE = 0.5


def _painter(source: np.ndarray, points: np.ndarray, actions: dict[str, float],
             inside: MouthInside | None = None) -> Painter:
    """The transfer's painter for a key face: its source crop ``source`` [S,S,3] uint8
    enlarged to the flow size, its landmarks ``points`` [N,2] there, the ``actions`` in force
    (kind → amount), the person's own mouth inside when known."""

    def paint(scales: list[float], flow: np.ndarray) -> np.ndarray | None:
        size = flow.shape[0]
        crop = (source if source.shape[0] == size
                else cv2.resize(source, (size, size), interpolation=cv2.INTER_CUBIC))
        return expression_paint(crop, points, actions, scales, flow, inside)

    return paint


#: The most frames :class:`PasteBack` holds while it waits for a face's next key field (a
#: bound above any ``face.key_every``; a face whose next key frame is further away — one
#: that lost its rendered face for a while — is pasted with its last field alone).
KEY_EVERY_BOUND = 16


def lerp_fields(a: EditField | None, b: EditField | None, weight: float) -> EditField | None:
    """``(1 − weight)·a + weight·b``; a None field (nothing moves) counts as zero motion."""
    if weight <= 0.0 or b is None and a is None:
        return a
    if a is None or b is None:
        known = a if a is not None else b
        scale = np.float32(1.0 - weight if a is not None else weight)
        return EditField(*((None if layer is None else (layer * scale).astype(np.float32))
                           for layer in (known.flow, known.brightness, known.paint)))
    return blend_fields(b, a, 1.0 - weight) if weight < 1.0 else b


class _KeyFields:
    """Each face's key fields by frame index, and where the face went out of the picture in
    between (a None entry: no field reaches across it)."""

    def __init__(self) -> None:
        self._entries: dict[int, list[tuple[int, _KeyField | None]]] = {}
        self._moved: dict[tuple[int, int, int], EditField | None] = {}

    def note_absent(self, index: int, present: set[int]) -> None:
        for identity, entries in self._entries.items():
            if identity not in present and entries[-1][1] is not None:
                entries.append((index, None))

    def add(self, identity: int, index: int, key: _KeyField) -> None:
        self._entries.setdefault(identity, []).append((index, key))

    def latest(self, identity: int) -> _KeyField | None:
        """The face's last key field (None: none, or the face left since)."""
        entries = self._entries.get(identity)
        return entries[-1][1] if entries else None

    def around(self, identity: int, index: int
               ) -> tuple[tuple[int, _KeyField] | None, tuple[int, _KeyField] | None, float]:
        """(the face's last key at or before ``index``, its next key after it, the frame's
        place between the two in [0, 1)); either key None where there is none (or the face
        left in between)."""
        before = after = None
        for entry in self._entries.get(identity, []):
            if entry[0] <= index:
                before = entry if entry[1] is not None else None
            else:
                after = entry if entry[1] is not None else None
                break
        if before is None or after is None:
            return before, None, 0.0
        return before, after, (index - before[0]) / (after[0] - before[0])

    def moved_onto(self, identity: int, key: tuple[int, _KeyField],
                   onto: tuple[int, _KeyField]) -> EditField | None:
        """``key``'s field moved with the face onto the frame of ``onto`` (made once a pair)."""
        pair = (identity, key[0], onto[0])
        if pair not in self._moved:
            self._moved[pair] = key[1].followed(onto[1].points)
        return self._moved[pair]

    def settled(self, frame: Frame, carried: Callable[[FaceSlot], bool], held: int) -> bool:
        """Whether every carried face of ``frame`` knows what follows its frame (a key field
        or its absence), or ``held`` frames are waiting already (:data:`KEY_EVERY_BOUND`)."""
        if held > KEY_EVERY_BOUND:
            return True
        for slot in frame.slots if frame.face_found else []:
            entries = self._entries.get(slot.identity)
            if carried(slot) and entries and entries[-1][0] <= frame.index:
                return False
        return True

    def forget_before(self, index: int) -> None:
        """Drop what no frame after ``index`` needs: each face's entries before its last one
        at or before ``index``."""
        for identity in list(self._entries):
            entries = self._entries[identity]
            last = max((k for k, (at, _) in enumerate(entries) if at <= index), default=0)
            del entries[:last]
            if len(entries) == 1 and entries[0][1] is None:
                del self._entries[identity]
        for pair in list(self._moved):  # a pair whose first key is forgotten is done
            entries = self._entries.get(pair[0])
            if not entries or pair[2] < entries[0][0]:
                del self._moved[pair]


@dataclass(frozen=True)
class _KeyField:
    """A key frame's transfer field (None: the edit moves nothing), the appearance weight it
    was applied with, the side of the crop it was measured for and the face's landmarks
    [N,2] in that crop at the flow size (None: unknown)."""

    field: EditField | None
    appearance: float
    crop_size: int
    points: np.ndarray | None

    def followed(self, points: np.ndarray | None) -> EditField | None:
        """The field moved with the face to a carried frame whose landmarks (same crop
        geometry) are ``points`` (:meth:`~vidinv.face.transfer.EditField.moved`); the flow's
        vectors turn and scale with the face. As measured without both point sets."""
        if (self.field is None or points is None or self.points is None
                or points.shape != self.points.shape):
            return self.field
        return self.field.moved(self.points, points)


def _limited(mask: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """``mask`` times ``keep`` resized to it (both [S,S] / [M,M] float32)."""
    if keep is None:
        return mask
    if keep.shape != mask.shape:
        keep = cv2.resize(keep, mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return (mask * keep).astype(np.float32)


def keep_source_where_masked(image: np.ndarray, source: np.ndarray, keep: np.ndarray,
                             crop_from_frame: np.ndarray, crop_size: int | None) -> None:
    """Put ``source``'s pixels back into ``image`` (in place; both [H,W,3] uint8) wherever
    ``keep`` ([M,M] in the geometry of a crop of side ``crop_size``), warped into the frame, is
    0 — a guarantee that does not depend on how the paste used its mask. A ``keep`` without
    a 0 leaves nothing to do: its warp is 0 only outside the crop, where no paste writes."""
    if keep.min() > 0:
        return
    size = keep.shape[0]
    crop_size = crop_size if crop_size is not None else size
    crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ crop_from_frame
    full = np.ones_like(keep)
    box = frame_box(full, crop_from_frame, image.shape)
    if box is not None:
        x0, y0, x1, y1 = box
        crop_from_box = crop_from_frame @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]],
                                                   np.float64)
        warped = cv2.warpAffine(keep, cv_inverse_map(np.linalg.inv(crop_from_box)),
                                (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        zero = warped <= 0
        np.copyto(image[y0:y1, x0:x1], source[y0:y1, x0:x1], where=zero[..., None])


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

