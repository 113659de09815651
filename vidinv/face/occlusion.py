"""Occlusion: where something in front of the face (a hand, a microphone, hair) covers it, and
how strongly the edit shows in each frame.

:class:`OcclusionDetector` looks at the aligned crop of each frame, in order, at a small side U
(the crop follows the face, so the face itself stays nearly still in it). Three cues flag a
pixel of the face as covered:

* **motion that disagrees with the face's**: DIS optical flow between the previous and this
  crop (at ``flow_scale`` × U: a skin-smooth hand has too little texture at U); the face's
  own motion there is close to affine (what is left of the head's motion after the
  landmark-driven alignment), so an affine fit to the flow over the face, refitted on its
  inliers, leaves a residual that is small on the face (lips and lids move a little) and large
  on a hand or an object moving across it;
* **appearance that the face never had**: a running reference of the crop (Lab) with a
  per-pixel spread, learned per clip from the pixels not flagged and moved along with the
  face's affine motion in the crop; a pixel far from its reference, more than
  ``appearance_threshold`` spreads (after removing the frame's median change, i.e.
  lighting), and unlike the face's skin (a chroma Gaussian learned from the cheeks and
  forehead, the features left out; ``skin_factor`` lowers the threshold there) is covered.
  A change towards the skin's own colour counts only in a frame where another cue found a
  cover (alone, a face turning would keep a stale reference flagged for ever);
* **a mouth that is no mouth**: the face mesh places the lips even under a hand; where it
  places them, this face's lips are redder (Lab a*) than its skin by a margin learned per
  clip. When that margin drops under ``lip_ratio`` of the usual, the lips' region is covered
  — the cue that catches a skin-toned hand or sleeve, whose colour and texture are too close
  to the face's for the others while it rests.

The flagged pixels are cleaned (opening, small blobs dropped), grown into the neighbouring
pixels that look like them and changed, held for a few frames (a detection decays by
``memory`` per frame and moves with the flow, i.e. with what covers the face; once no cue
flags a pixel, its cover fades out over a few frames, :data:`RELEASE`), widened by
``margin`` and feathered: the result is the covered map, [U,U] float32 in [0,1] (1 =
covered), in the crop's geometry. The part of the crop that is padding beyond the frame's
border is never flagged, learned or counted; after a frame without the face the reference is
learned afresh.

:func:`fade_weights` turns "is the face seen in this frame" into a per-frame edit weight that
ramps linearly over ``fade_frames`` frames towards every frame where it is not (face lost,
mostly covered), so the edit fades out and back in instead of popping; :class:`EditFade`
streams it for one face.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from vidinv.face.paste import ellipse_mask
from vidinv.face.regions import region_mask
from vidinv.frame import FaceLandmarks

#: Side of the crop the detector works at.
OCCLUSION_SIZE = 64


#: The held detection values between which the covered map goes from 0 to 1: a pixel
#: flagged in this frame (held 1) is covered; once no cue flags it, it stays covered for a
#: frame and then fades over three (``memory`` 0.6: 0.65, 0.29, 0.08), where a threshold at
#: 0.25 gave back the edit in one frame (pops as a hand left the mouth).
RELEASE = (0.1, 0.5)


def _truncated_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3:
        return mask
    radius = int(math.ceil(3 * sigma))
    return cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma,
                            borderType=cv2.BORDER_CONSTANT)


def _affine_residual(flow: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|flow − affine fit| [U,U], the fit's flow [U,U,2]); the fit is least squares over
    ``where``, refitted once on the pixels whose residual is below twice the median (so the
    occluder does not pull it). Solved by the 3×3 normal equations of (x, y, 1) per flow
    component (the least-squares solution, without building the [N,3] design)."""
    size = flow.shape[0]
    coordinates = np.arange(size, dtype=np.float64)
    xs, ys = np.meshgrid(coordinates, coordinates)
    components = (flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64))
    residual = np.zeros((size, size))
    fitted = [np.zeros((size, size)), np.zeros((size, size))]
    use = where
    for _ in range(2):
        count = int(np.count_nonzero(use))
        if count < 6:
            break
        x, y = xs[use], ys[use]
        sx, sy = x.sum(), y.sum()
        normal = np.array([[x @ x, x @ y, sx], [x @ y, y @ y, sy], [sx, sy, count]])
        values = [component[use] for component in components]
        moments = np.array([[v @ x, v @ y, v.sum()] for v in values]).T  # [3,2]
        try:
            coefficients = np.linalg.solve(normal, moments)
        except np.linalg.LinAlgError:  # the pixels lie on a line: no unique plane
            coefficients, *_ = np.linalg.lstsq(np.stack([x, y, np.ones(count)], 1),
                                               np.stack(values, 1), rcond=None)
        fitted = [coefficients[0, k] * xs + coefficients[1, k] * ys + coefficients[2, k]
                  for k in range(2)]
        residual = np.hypot(components[0] - fitted[0], components[1] - fitted[1])
        use = where & (residual <= max(2 * float(np.median(residual[where])), 0.5))
    return residual.astype(np.float32), np.dstack(fitted).astype(np.float32)


def _follow(image: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """``image`` [U,U,…] moved along ``motion`` [U,U,2] (pixels, previous → this frame)."""
    size = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return cv2.remap(image, xs - motion[..., 0], ys - motion[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class OcclusionDetector:
    """Covered maps of one clip's crops; :meth:`update` with each frame in order.

    Args:
        size: U, the working side.
        motion_threshold: flow residual (fraction of U per frame) above which a pixel moves
            unlike the face.
        appearance_threshold: change from the reference, in running spreads, above which a
            pixel is unlike the face (``skin_factor`` times that where its colour is not skin).
        memory: how much of a detection is kept the next frame (held while above 0.25).
        margin, feather: widening and feather σ of the covered map (fractions of U).
        learn_rate: how fast the reference follows the unflagged pixels.
    """

    def __init__(self, size: int = OCCLUSION_SIZE, *, motion_threshold: float = 0.04,
                 appearance_threshold: float = 4.0, skin_factor: float = 0.6,
                 skin_threshold: float = 3.5, memory: float = 0.6, margin: float = 0.02,
                 feather: float = 0.02, learn_rate: float = 0.05,
                 min_blob: float = 0.006, grow: float = 0.2, grow_change: float = 1.5,
                 occluder_distance: float = 3.0, lip_ratio: float = 0.45,
                 min_lip_contrast: float = 2.0, flow_scale: int = 2) -> None:
        self.size = int(size)
        self.motion_threshold = float(motion_threshold)
        self.appearance_threshold = float(appearance_threshold)
        self.skin_factor = float(skin_factor)
        self.skin_threshold = float(skin_threshold)
        self.memory = float(memory)
        self.margin = float(margin)
        self.feather = float(feather)
        self.learn_rate = float(learn_rate)
        self.min_blob = float(min_blob)
        self.grow = float(grow)
        self.grow_change = float(grow_change)
        self.occluder_distance = float(occluder_distance)
        self.lip_ratio = float(lip_ratio)
        self.min_lip_contrast = float(min_lip_contrast)
        self.flow_scale = int(flow_scale)
        self.face_zone = ellipse_mask(self.size, erode=0.0, feather=0.0) > 0.5
        self._dis: cv2.DISOpticalFlow | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the clip (call at the start of each clip)."""
        self._grey: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._spread: np.ndarray | None = None
        self._held = np.zeros((self.size, self.size), np.float32)
        self._known = np.zeros((self.size, self.size), bool)  # reference from the frame
        self._skin: tuple[np.ndarray, np.ndarray] | None = None
        self._lip_contrast: float | None = None  # lips' redness over the skin's (a*, Lab)
        self._frames = 0
        #: fraction of the face zone covered in the last update
        self.covered_fraction = 0.0

    def lost(self) -> None:
        """The face was not in a frame. When it comes back its look is learned afresh (the
        pose, light and what stands around it have changed while it was away: the old
        reference would flag the whole face) and the first crop is not compared for motion;
        the skin model is kept."""
        self._grey = None
        self._reference = self._spread = None
        self._held[:] = 0
        self._frames = 0

    def inside_frame(self, crop_from_frame: np.ndarray, crop_side: int,
                     frame_shape: tuple[int, ...]) -> np.ndarray:
        """[U,U] bool: the working pixels whose crop pixels come from inside the frame (the
        rest is the crop's padding where it runs off the frame, never a cover), less a
        one-pixel rim (the padding's blur reaches just inside)."""
        size = self.size
        centres = (np.arange(size, dtype=np.float64) + 0.5) * crop_side / size - 0.5
        us, vs = np.meshgrid(centres, centres)
        frame_from_crop = np.linalg.inv(crop_from_frame)
        xs = frame_from_crop[0, 0] * us + frame_from_crop[0, 1] * vs + frame_from_crop[0, 2]
        ys = frame_from_crop[1, 0] * us + frame_from_crop[1, 1] * vs + frame_from_crop[1, 2]
        height, width = frame_shape[:2]
        inside = (xs >= 0) & (ys >= 0) & (xs <= width - 1) & (ys <= height - 1)
        if inside.all():
            return inside
        return cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8),
                         borderType=cv2.BORDER_REPLICATE) > 0

    def _flow(self) -> cv2.DISOpticalFlow:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return self._dis

    def _skin_distance(self, lab: np.ndarray) -> np.ndarray | None:
        """Mahalanobis distance [U,U] of each pixel's chroma (a, b) to the face's skin."""
        if self._skin is None:
            return None
        mean, inverse = self._skin
        delta = lab[..., 1:] - mean
        return np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", delta, inverse, delta), 0))

    def _learn_skin(self, lab: np.ndarray, zone: np.ndarray) -> None:
        chroma = lab[..., 1:][zone]
        if len(chroma) < 20:
            return
        mean = chroma.mean(axis=0)
        cov = np.cov(chroma.T) + np.eye(2) * 4.0  # floor: JPEG-flat skin has tiny spread
        if self._skin is not None:
            old_mean, old_inverse = self._skin
            rate = max(self.learn_rate, 1.0 / (self._frames + 1))
            mean = (1 - rate) * old_mean + rate * mean
            cov = (1 - rate) * np.linalg.inv(old_inverse) + rate * cov
        self._skin = (mean, np.linalg.inv(cov))

    def _lips_redness(self, lab: np.ndarray, lips: np.ndarray) -> float | None:
        """How much redder (a*) the lips are than the face's skin, or None (no model yet):
        the 80th percentile over the mouth's region, so teeth or a dark mouth between parted
        lips do not count."""
        if self._skin is None or lips.sum() < 4:
            return None
        return float(np.percentile(lab[..., 1][lips], 80) - self._skin[0][0])

    def _mouth_covered(self, lab: np.ndarray, lips: np.ndarray) -> bool:
        """The mesh's mouth is not a mouth: where its lips are, the colour has lost the lips'
        redness over the skin that this face's lips have (a skin-toned hand, a sleeve over the
        mouth: its appearance alone is too close to the face's to be flagged)."""
        contrast = self._lips_redness(lab, lips)
        usual = self._lip_contrast
        if contrast is None or usual is None or usual < self.min_lip_contrast:
            return False
        return contrast < self.lip_ratio * usual

    def _learn_lips(self, lab: np.ndarray, lips: np.ndarray) -> None:
        contrast = self._lips_redness(lab, lips)
        if contrast is None:
            return
        rate = max(self.learn_rate, 1.0 / (self._frames + 1))
        self._lip_contrast = contrast if self._lip_contrast is None else (
            (1 - rate) * self._lip_contrast + rate * contrast)

    def _clean(self, flagged: np.ndarray) -> np.ndarray:
        """Opening, then blobs below ``min_blob`` of the crop dropped; uint8 0/1."""
        size = self.size
        cleaned = cv2.morphologyEx(flagged.astype(np.uint8), cv2.MORPH_OPEN,
                                   np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(cleaned, connectivity=8)
        small_blobs = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < self.min_blob * size * size)
        cleaned[np.isin(labels, small_blobs[small_blobs > 0])] = 0
        return cleaned

    def _grow(self, core: np.ndarray, lab: np.ndarray, change: np.ndarray, zone: np.ndarray
              ) -> np.ndarray:
        """Add to the flagged blobs the pixels next to them that look like the occluder (the
        Lab Gaussian of the flagged pixels) more than like their own reference and that have
        changed (over ``grow_change`` spreads)."""
        if core.sum() < 8:
            return core
        samples = lab[core > 0]
        mean = samples.mean(axis=0)
        inverse = np.linalg.inv(np.cov(samples.T) + np.eye(3) * 4.0)
        delta = lab - mean
        like_occluder = np.sqrt(np.maximum(
            np.einsum("...i,ij,...j->...", delta, inverse, delta), 0)) < self.occluder_distance
        candidates = like_occluder & (change > self.grow_change * self._spread) & zone
        grown = core.copy()
        step = np.ones((3, 3), np.uint8)
        for _ in range(int(round(self.grow * self.size))):
            reach = cv2.dilate(grown, step) & candidates.astype(np.uint8)
            if not (reach & ~grown.astype(bool)).any():
                break
            grown |= reach
        return grown

    def update(self, crop: np.ndarray, landmarks: FaceLandmarks | None = None,
               crop_from_frame: np.ndarray | None = None,
               frame_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The covered map [U,U] float32 of this frame.

        Args:
            crop: the aligned crop [S,S,3] uint8 RGB (any S; resized to U).
            landmarks, crop_from_frame: the frame's face and its frame → crop map for a crop
                of side S; with them the eyes, brows and mouth are left out of the skin model.
            frame_shape: the frame's (H, W, …); with ``crop_from_frame`` the part of the
                crop that is padding beyond the frame's border is never flagged, learned or
                counted.
        """
        size = self.size
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        flow_size = self.flow_scale * size
        grey = cv2.cvtColor(cv2.resize(crop, (flow_size, flow_size), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2GRAY)
        inside = np.ones((size, size), bool)
        if crop_from_frame is not None and frame_shape is not None:
            inside = self.inside_frame(crop_from_frame, crop.shape[0], frame_shape)
        zone = self.face_zone & inside
        if zone.sum() < 0.2 * self.face_zone.sum():  # the face is mostly beyond the border
            self._grey = None
            self.covered_fraction = 0.0
            return np.zeros((size, size), np.float32)
        features = lips = np.zeros((size, size), bool)
        if landmarks is not None and crop_from_frame is not None:
            scale = np.diag([size / crop.shape[1], size / crop.shape[0], 1.0])
            features = region_mask(size, landmarks, scale @ crop_from_frame,
                                   ("eyes", "brows", "mouth")) > 0
            lips = region_mask(size, landmarks, scale @ crop_from_frame, ("mouth",)) > 0.5
            lips &= zone
        flagged = np.zeros((size, size), bool)
        mouth_covered = self._mouth_covered(lab, lips)
        if mouth_covered:
            flagged |= lips

        if self._grey is not None:
            flow = self._flow().calc(self._grey, grey, None)
            residual, motion = _affine_residual(flow, cv2.resize(
                zone.astype(np.uint8), (flow_size, flow_size),
                interpolation=cv2.INTER_NEAREST) > 0)
            def working(array: np.ndarray) -> np.ndarray:  # flow pixels → working pixels
                return cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA) \
                    / self.flow_scale

            flagged |= working(residual) > self.motion_threshold * size
            if self._reference is not None:  # the reference moves with the face in the crop
                motion = working(motion)
                self._reference = _follow(self._reference, motion)
                self._spread = _follow(self._spread, motion)
                # and a cover with what covers it (the flow itself: a hand moving on)
                self._held = _follow(self._held, working(flow))
        if self._reference is None:
            self._reference = lab.copy()
            self._spread = np.full((size, size), 6.0, np.float32)
            self._known = inside.copy()
        fresh = inside & ~self._known  # came in from beyond the border: nothing to compare
        if fresh.any():
            self._reference[fresh] = lab[fresh]
            self._spread[fresh] = 6.0
            self._known |= fresh
        change = np.linalg.norm(lab - self._reference, axis=2)
        change = np.maximum(change - float(np.median(change[zone])), 0.0)
        threshold = self.appearance_threshold * self._spread
        skin = self._skin_distance(lab)
        changed = change > threshold
        if skin is not None:
            unlike_skin = skin > self.skin_threshold
            changed = change > np.where(unlike_skin, threshold * self.skin_factor, threshold)
            # a change to a colour of the face's own skin counts only in a frame where
            # another cue found a cover (the face turning, light moving: a skin-toned
            # reference gone stale would otherwise be held for ever)
            if not self._clean((flagged | (changed & unlike_skin)) & zone).any():
                changed &= unlike_skin
        flagged |= changed
        flagged &= zone

        cleaned = self._clean(flagged)
        cleaned = self._grow(cleaned, lab, change, zone)
        self._held = np.maximum(cleaned.astype(np.float32), self.memory * self._held)
        covered = (self._held > 0.25) & zone

        # learn from what is not covered, not at all near a cover (so an occluder that stops
        # moving is not learned as the face); the skin model from the cheeks and forehead
        rate = max(self.learn_rate, 1.0 / (self._frames + 1))
        near = int(round(self.margin * size * 2))
        widened = (cv2.dilate(covered.astype(np.uint8), np.ones((2 * near + 1,) * 2, np.uint8))
                   > 0) if covered.any() else covered
        rates = np.where(widened | ~inside, 0.0, rate).astype(np.float32)
        self._reference += rates[..., None] * (lab - self._reference)
        self._spread += rates * (np.minimum(change, 40.0) - self._spread)
        np.maximum(self._spread, 3.0, out=self._spread)
        self._learn_skin(lab, zone & ~features & ~widened)
        if not mouth_covered and not (lips & widened).any():
            self._learn_lips(lab, lips)
        self._grey = grey
        self._frames += 1

        self.covered_fraction = float(covered[zone].mean())  # of the face's part in the frame
        # widened by the margin and by the feather's reach, so the map is 1 over the whole
        # flagged area + margin and fades to 0 outside it
        radius = int(round(self.margin * size)) + int(math.ceil(3 * self.feather * size))
        # a cover shows at once; where it has gone, the map fades over a few frames as the
        # held detection decays (RELEASE), so the edit comes back instead of popping back
        low, high = RELEASE
        soft = np.clip((self._held - low) / (high - low), 0.0, 1.0) * zone
        if radius > 0 and soft.any():
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            soft = cv2.dilate(soft, kernel)
        return _truncated_blur(soft.astype(np.float32), self.feather * size)


def fade_weights(seen: Sequence[bool], fade_frames: int) -> np.ndarray:
    """Per-frame edit weights [N] in [0,1]: min(1, d / ``fade_frames``) with d the distance in
    frames to the nearest frame that is not ``seen`` (0 there). A clip's start and end are
    not losses. ``fade_frames`` 0: 1 where seen, 0 elsewhere."""
    seen = np.asarray(seen, bool)
    count = len(seen)
    distance = np.full(count, np.inf)
    lost = np.flatnonzero(~seen)
    if len(lost):
        positions = np.arange(count)
        distance = np.min(np.abs(positions[:, None] - lost[None, :]), axis=1).astype(float)
    if fade_frames <= 0:
        return seen.astype(np.float32)
    return np.minimum(1.0, distance / fade_frames).astype(np.float32)


class EditFade:
    """Streaming :func:`fade_weights` of one face: :meth:`push` each frame's state; the weight
    of frame k is known once frame k + ``look_ahead`` has been pushed (or at :meth:`finish`).

    A frame's state is True (the face is seen), False (a loss: the face is lost or mostly
    covered; the edit ramps down to it and back up from it) or None (the face is not in the
    frame and that is no loss: it has left through the frame's border or gone behind
    something; no ramp). :meth:`lost_before` turns the last frame pushed into a loss after the
    fact (a face that comes back in the open fades in from it).

    ``look_ahead`` = ``fade_frames`` gives the two-sided ramp (offline); 0 gives the causal
    one (live): the edit fades back in after a loss but, with no look-ahead, cannot fade out
    before it. ``start`` is the index of the first frame pushed (a face that appears later in
    a clip).
    """

    def __init__(self, fade_frames: int = 5, look_ahead: int | None = None, *,
                 start: int = 0) -> None:
        self.fade_frames = int(fade_frames)
        self.look_ahead = self.fade_frames if look_ahead is None else int(look_ahead)
        self._states: deque[bool | None] = deque()  # frames _next … _count − 1
        self._last_lost: int | None = None
        self._next = int(start)   # index of the next frame whose weight is given
        self._count = int(start)  # index of the next frame pushed

    def _weight(self) -> float:
        state = self._states[0]
        if not state:
            return 0.0
        if self.fade_frames <= 0:
            return 1.0
        distance = math.inf
        if self._last_lost is not None:
            distance = self._next - self._last_lost
        for ahead, later in enumerate(itertools.islice(self._states, 0,
                                                       self.fade_frames + 1)):
            if later is False:
                distance = min(distance, ahead)
                break
        return float(min(1.0, distance / self.fade_frames))

    def push(self, seen: bool | None) -> list[float]:
        """Add a frame; the weights now known, oldest first."""
        self._states.append(None if seen is None else bool(seen))
        self._count += 1
        ready = []
        while self._next + self.look_ahead < self._count:
            ready.append(self._give())
        return ready

    @property
    def next_given(self) -> int:
        """The index of the frame whose weight comes next."""
        return self._next

    def lost_before(self) -> None:
        """The last frame pushed (before any: the frame before ``start``) counts as a loss;
        the ramp after it starts there."""
        if self._count > self._next:  # still held
            self._states[-1] = False
        else:
            self._last_lost = self._count - 1

    def finish(self) -> list[float]:
        """The weights of the frames still held (the clip ended)."""
        ready = []
        while self._next < self._count:
            ready.append(self._give())
        return ready

    def _give(self) -> float:
        weight = self._weight()
        if self._states.popleft() is False:
            self._last_lost = self._next
        self._next += 1
        return weight
