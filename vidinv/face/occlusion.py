"""Occlusion: where something in front of the face (a hand, a microphone, hair) covers it, and
how strongly the edit shows in each frame.

:class:`OcclusionDetector` looks at the aligned crop of each frame, in order, at a small side U
(the crop follows the face, so the face itself stays nearly still in it). Two cues flag a pixel
of the face as covered:

* **motion that disagrees with the face's**: DIS optical flow between the previous and this
  crop; the face's own motion there is close to affine (what is left of the head's motion after
  the landmark-driven alignment), so an affine fit to the flow over the face, refitted on its
  inliers, leaves a residual that is small on the face (lips and lids move a little) and large
  on a hand or an object moving across it;
* **appearance that the face never had**: a running reference of the crop (Lab) with a
  per-pixel spread, learned per clip from the pixels not flagged; a pixel far from its
  reference, more than ``appearance_threshold`` spreads (after removing the frame's median
  change, i.e. lighting), is covered. Where the pixel's colour is also unlike the face's skin
  (a chroma Gaussian learned from the cheeks and forehead, the features left out) the
  threshold is lowered, so a dark microphone or a piece of fur is caught earlier than a
  skin-toned hand. This cue also keeps an occluder that stopped moving flagged.

The flagged pixels are cleaned (opening, small blobs dropped), held for a few frames (a
detection decays by ``memory`` per frame), widened by ``margin`` and feathered: the result is
the covered map, [U,U] float32 in [0,1] (1 = covered), in the crop's geometry.

:func:`fade_weights` turns "is the face seen in this frame" into a per-frame edit weight that
ramps linearly over ``fade_frames`` frames towards every frame where it is not (face lost,
mostly covered), so the edit fades out and back in instead of popping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from vidinv.face.paste import ellipse_mask
from vidinv.face.regions import region_mask
from vidinv.frame import FaceLandmarks

#: Side of the crop the detector works at.
OCCLUSION_SIZE = 64


def _truncated_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3:
        return mask
    radius = int(math.ceil(3 * sigma))
    return cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma,
                            borderType=cv2.BORDER_CONSTANT)


def _affine_residual(flow: np.ndarray, where: np.ndarray) -> np.ndarray:
    """|flow − affine fit| [U,U]; the fit is least squares over ``where``, refitted once on
    the pixels whose residual is below twice the median (so the occluder does not pull it)."""
    size = flow.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    design = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)], axis=1)
    target = flow.reshape(-1, 2).astype(np.float64)
    use = where.ravel()
    residual = np.zeros(size * size)
    for _ in range(2):
        if use.sum() < 6:
            break
        coefficients, *_ = np.linalg.lstsq(design[use], target[use], rcond=None)
        residual = np.linalg.norm(target - design @ coefficients, axis=1)
        inliers = residual[where.ravel()]
        use = where.ravel() & (residual <= max(2 * float(np.median(inliers)), 0.5))
    return residual.reshape(size, size).astype(np.float32)


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
                 occluder_distance: float = 3.0) -> None:
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
        self.face_zone = ellipse_mask(self.size, erode=0.0, feather=0.0) > 0.5
        self._dis: cv2.DISOpticalFlow | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the clip (call at the start of each clip)."""
        self._grey: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._spread: np.ndarray | None = None
        self._held = np.zeros((self.size, self.size), np.float32)
        self._skin: tuple[np.ndarray, np.ndarray] | None = None
        self._frames = 0
        #: fraction of the face zone covered in the last update
        self.covered_fraction = 0.0

    def lost(self) -> None:
        """The face was not in a frame: the next crop is not compared for motion."""
        self._grey = None

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
               crop_from_frame: np.ndarray | None = None) -> np.ndarray:
        """The covered map [U,U] float32 of this frame.

        Args:
            crop: the aligned crop [S,S,3] uint8 RGB (any S; resized to U).
            landmarks, crop_from_frame: the frame's face and its frame → crop map for a crop
                of side S; with them the eyes, brows and mouth are left out of the skin model.
        """
        size = self.size
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        zone = self.face_zone
        features = np.zeros((size, size), bool)
        if landmarks is not None and crop_from_frame is not None:
            scale = np.diag([size / crop.shape[1], size / crop.shape[0], 1.0])
            features = region_mask(size, landmarks, scale @ crop_from_frame,
                                   ("eyes", "brows", "mouth")) > 0
        flagged = np.zeros((size, size), bool)

        if self._grey is not None:
            flow = self._flow().calc(self._grey, grey, None)
            residual = _affine_residual(flow, zone)
            flagged |= residual > self.motion_threshold * size
        if self._reference is None:
            self._reference = lab.copy()
            self._spread = np.full((size, size), 6.0, np.float32)
        change = np.linalg.norm(lab - self._reference, axis=2)
        change = np.maximum(change - float(np.median(change[zone])), 0.0)
        threshold = self.appearance_threshold * self._spread
        skin = self._skin_distance(lab)
        if skin is not None:
            threshold = np.where(skin > self.skin_threshold, threshold * self.skin_factor,
                                 threshold)
        flagged |= change > threshold
        flagged &= zone

        cleaned = self._clean(flagged)
        cleaned = self._grow(cleaned, lab, change, zone)
        self._held = np.maximum(cleaned.astype(np.float32), self.memory * self._held)
        covered = self._held > 0.25

        # learn from what is not covered, not at all near a cover (so an occluder that stops
        # moving is not learned as the face); the skin model from the cheeks and forehead
        rate = max(self.learn_rate, 1.0 / (self._frames + 1))
        near = int(round(self.margin * size * 2))
        widened = (cv2.dilate(covered.astype(np.uint8), np.ones((2 * near + 1,) * 2, np.uint8))
                   > 0) if covered.any() else covered
        rates = np.where(widened, 0.0, rate).astype(np.float32)
        self._reference += rates[..., None] * (lab - self._reference)
        self._spread += rates * (np.minimum(change, 40.0) - self._spread)
        np.maximum(self._spread, 3.0, out=self._spread)
        self._learn_skin(lab, zone & ~features & ~widened)
        self._grey = grey
        self._frames += 1

        self.covered_fraction = float(covered[zone].mean())
        # widened by the margin and by the feather's reach, so the map is 1 over the whole
        # flagged area + margin and fades to 0 outside it
        radius = int(round(self.margin * size)) + int(math.ceil(3 * self.feather * size))
        binary = covered.astype(np.uint8) * 255
        if radius > 0 and covered.any():
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            binary = cv2.dilate(binary, kernel)
        return _truncated_blur(binary.astype(np.float32) / 255.0, self.feather * size)


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
    """Streaming :func:`fade_weights`: :meth:`push` each frame's ``seen``; the weight of frame
    k is known once frame k + ``look_ahead`` has been pushed (or at :meth:`finish`).

    ``look_ahead`` = ``fade_frames`` gives the two-sided ramp (offline); 0 gives the causal
    one (live): the edit fades back in after a loss but, with no look-ahead, cannot fade out
    before it.
    """

    def __init__(self, fade_frames: int = 5, look_ahead: int | None = None) -> None:
        self.fade_frames = int(fade_frames)
        self.look_ahead = self.fade_frames if look_ahead is None else int(look_ahead)
        self._seen: list[bool] = []
        self._last_lost: int | None = None
        self._next = 0  # index of the next frame whose weight is given

    def _weight(self, index: int) -> float:
        if self.fade_frames <= 0:
            return 1.0 if self._seen[index] else 0.0
        distance = math.inf
        if self._last_lost is not None:
            distance = index - self._last_lost
        for ahead in range(index, min(len(self._seen), index + self.fade_frames + 1)):
            if not self._seen[ahead]:
                distance = min(distance, ahead - index)
                break
        return float(min(1.0, distance / self.fade_frames))

    def push(self, seen: bool) -> list[float]:
        """Add a frame; the weights now known, oldest first."""
        self._seen.append(bool(seen))
        ready = []
        while self._next + self.look_ahead < len(self._seen):
            ready.append(self._give())
        return ready

    def finish(self) -> list[float]:
        """The weights of the frames still held (the clip ended)."""
        ready = []
        while self._next < len(self._seen):
            ready.append(self._give())
        return ready

    def _give(self) -> float:
        index = self._next
        weight = self._weight(index)
        if not self._seen[index]:
            self._last_lost = index
        self._next += 1
        return weight
