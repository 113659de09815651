"""Transfer paste: move the source's own pixels by the motion the model's edit makes.

The model renders the reconstruction R = G(w, F) and the edit E = G(w̃, F̃) of the same face.
Instead of pasting E (whose detail is the model's, blurred at a small model's resolution), this
finds the dense motion from E back to R — for an edit of the expressions the model was taught,
their action units' own motion field scaled by how far the model's edit goes along it
(:func:`fit_actions`); for any other edit, DIS optical flow at the finest pyramid level with
small patches, on both images enlarged to ``flow_size`` (the coarser default preset found only
about a third to a half of a smile's motion), smoothed at the model's own scale by a
normalised convolution that trusts the flow where the face has edges (:func:`smooth_flow`) —
carries that field into the frame through the crop transform, resamples the frame's face
region along it at full resolution, adds the shading that motion cannot explain — E minus R
warped by the same field, low-passed and limited to :data:`SHADING_LIMIT` levels — and blends
the result in with the feathered face mask (at full strength from the middle of its feather
inwards). The shading is scaled by ``appearance`` — the caller passes 0 on a face the model
does not know (:func:`appearance_weight`: R far from the source), whose appearance would be the
model's person, so only the motion is carried. Where E equals R (strength 0) the frame comes
back bit for bit.

Why shading only from the model: an earlier version carried large appearance changes (teeth,
the mouth's inside, folds) at E's full detail. On the embedded 64-px model those are blotches —
the smile's "folds" are wide dark patches beside the mouth, its teeth a bluish-pink blur — and
pasted into a sharp frame they smeared the lower face of every strong smile. What an
expression shows beyond motion is instead drawn: an edit read as its action units carries a
paint layer (:attr:`EditField.paint`, :mod:`vidinv.face.appearance`: the upper teeth where the
lips part, a smile's folds) drawn from the face's own landmarks and skin in the output's
geometry, composited over the moved pixels inside the mask — on any face, known or not.

Shapes: frames [H,W,3] uint8 RGB; faces [S,S,3] uint8 RGB at the generator's resolution; masks
[U,U] float32 in [0,1] at ``flow_size`` U; flows [U,U,2] float32 (x, y) in U-pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from vidinv.face.align import cv_inverse_map
from vidinv.face.keyframes import affine_map, follow_map, resample_followed
from vidinv.face.paste import frame_box

#: Draws an expression's appearance for the fitted scales and the flow [U,U,2]: a paint layer
#: [U,U,4] float32 (premultiplied RGB 0…255, alpha 0…1) or None.
Painter = Callable[[list[float], np.ndarray], "np.ndarray | None"]

#: Side at which the flow is estimated (faces are enlarged to it; DIS needs some pixels).
FLOW_SIZE = 128
#: σ of the low-pass on the appearance residual, as a fraction of the face side.
RESIDUAL_SIGMA = 0.02
#: σ of the smoothing of the flow field, as a fraction of the face side: a bit over a pixel of
#: a 64-px model (motion finer than that is the flow's guessing; at 0.01 the lips zig-zagged).
#: At the lips (MediaPipe on E and R, smile 2, the real clip) the flow carries 1.03 × the
#: model's landmark motion unsmoothed, 0.84 × at 0.02 and 0.73 × at 0.03: 0.03 lost a quarter
#: of the smile (the corners' rise on all 120 frames +0.081 inter-ocular vs +0.099 at 0.02), for
#: a face-pops ratio at smile 3 a little lower (talking head 1.08 vs 1.09).
FLOW_SIGMA = 0.02
#: Flow below this many U-pixels is taken as no motion (DIS noise, or an expression field's far
#: tails; resampling along it would only soften the frame).
MIN_MOTION = 0.15
#: DIS settings: the finest pyramid level (0) and 4-pixel patches every 2 pixels. The FAST
#: preset's defaults (level 2, 8-pixel patches) carried ~35 % of the model's smile motion on the
#: real clip (dlib points of R warped by the flow vs E); these ~70 %.
DIS_FINEST_SCALE = 0
DIS_PATCH = (4, 2)
#: The appearance residual carried into the frame is shading: low-passed and limited to this
#: many levels (0…255) either way.
SHADING_LIMIT = 6.0
#: PSNR (dB) of R against the source crop below which the model does not know the face (its
#: appearance would be another person's): appearance weight 0 at the first, 1 at the second.
KNOWN_PSNR = (17.0, 21.0)
#: The most an expression's fitted motion may be, × the motion of the strength asked (the
#: model's edit may go a little further than the expression it was taught; further would be a
#: motion no warp of its training made).
MAX_ACTION = 1.25
#: Values of each scale tried by :func:`fit_actions` (then refined), 0…MAX_ACTION.
ACTION_STEPS = 11
#: Rows per band when the frame is resampled only where the flow moves it.
RESAMPLE_BAND = 32
#: Flow (frame pixels) below this in both directions is taken as none when it is carried into
#: the frame (resampling along it changes a pixel by a level at most). The field's tails
#: (its fade at the mask's feather, the carried frames' following) are that thin over much of
#: the face: on the real clip's smile 44 % of the face box had some flow and 26 % this much.
STILL_SHIFT = 1 / 64


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class EditTransfer:
    """Applies an edit's motion (and low-passed appearance change) to a frame.

    Args:
        flow_size: U, the side at which flow, mask and residual live.
        residual_sigma: low-pass σ of the residual (fraction of U); ``None`` drops it.
        flow_sigma: smoothing σ of the flow (fraction of U).
        restrict_to_motion: resample the frame only where the flow is not 0 (bands of
            :data:`RESAMPLE_BAND` rows, each across its moving columns: the same output up to
            ±1 level of OpenCV's fixed-point rounding, for less work; the cost is printed by
            ``benchmarks/paste_cost.py``); False resamples every face-box row that moves, in
            full.
    """

    def __init__(self, flow_size: int = FLOW_SIZE, residual_sigma: float | None = RESIDUAL_SIGMA,
                 flow_sigma: float = FLOW_SIGMA, restrict_to_motion: bool = True) -> None:
        self.flow_size = int(flow_size)
        self.restrict_to_motion = restrict_to_motion
        self.residual_sigma = residual_sigma
        self.flow_sigma = float(flow_sigma)
        self._dis = None

    def _flow(self) -> cv2.DISOpticalFlow:
        if self._dis is None:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            dis.setFinestScale(DIS_FINEST_SCALE)
            dis.setPatchSize(DIS_PATCH[0])
            dis.setPatchStride(DIS_PATCH[1])
            self._dis = dis
        return self._dis

    def motion(self, edited: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(flow [U,U,2], residual [U,U,3] float32) in the crop's geometry at U.

        ``flow`` maps each pixel of E to where the same point is in R (E(p) ≈ R(p + flow(p))),
        attenuated by :func:`motion_support` of ``mask`` so nothing outside the face moves;
        ``residual`` is E − R∘flow (in 0…255 units), masked, low-passed and limited to
        ±:data:`SHADING_LIMIT`; its brightness only (the mean over the channels), so the
        colours stay the person's.
        """
        return self.field(edited, reconstruction, mask).masked(mask)

    def field(self, edited: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray,
              actions: list[np.ndarray] | None = None,
              painter: Painter | None = None,
              fixed: list[float | None] | None = None) -> EditField:
        """The edit's field before the face mask limits it (:meth:`motion` is
        ``field(...).masked(mask)``). ``mask`` [U,U] is the one the residual is measured
        through (R is moved by the masked flow); a later frame may apply the field with its
        own mask, since the field lives in the aligned crop's geometry.

        With ``actions`` (the motion fields [U,U,2] of the expressions the edit was taught, at
        the strengths asked: :func:`~vidinv.face.expressions.action_field`) the flow is those
        fields, each scaled by how far the model's edit goes along it (:func:`fit_actions`),
        instead of optical flow between E and R (``fixed``: scales kept instead of fitted, as
        :func:`fit_actions`); with ``painter`` too (called with the fitted
        scales and the flow: :func:`~vidinv.face.appearance.expression_paint`), the field
        carries the paint layer it returns — the teeth of parted lips, a smile's folds."""
        size = self.flow_size
        up_e = cv2.resize(edited, (size, size), interpolation=cv2.INTER_CUBIC)
        up_r = cv2.resize(reconstruction, (size, size), interpolation=cv2.INTER_CUBIC)
        if actions:
            support = motion_support(mask)[..., None]
            scales = fit_actions(up_e, up_r, mask, [f * support for f in actions],
                                 fixed=fixed)
            flow = sum((np.float32(s) * f for s, f in zip(scales, actions, strict=True)),
                       np.zeros((size, size, 2), np.float32))
        else:
            grey_e = _grey(up_e)
            flow = self._flow().calc(grey_e, _grey(up_r), None)
            if self.flow_sigma > 0:
                flow = smooth_flow(flow, grey_e, self.flow_sigma * size)
        magnitude = np.linalg.norm(flow, axis=2, keepdims=True)
        flow = flow * np.clip((magnitude - MIN_MOTION) / MIN_MOTION, 0, 1)
        paint = painter(scales, flow) if actions and painter is not None else None
        field = EditField(flow.astype(np.float32), None, paint)
        if self.residual_sigma is not None:
            masked_flow = field.masked_flow(mask)
            xs, ys = np.meshgrid(np.arange(size, dtype=np.float32),
                                 np.arange(size, dtype=np.float32))
            moved = cv2.remap(up_r, xs + masked_flow[..., 0], ys + masked_flow[..., 1],
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            full = up_e.astype(np.float32) - moved.astype(np.float32)
            sigma = self.residual_sigma * size
            low = cv2.GaussianBlur(full, (0, 0), sigma)
            # Brightness only: the hue is the person's (a small model's teeth came out
            # bluish, and were carried as such).
            field.brightness = np.clip(low.mean(axis=2, keepdims=True), -SHADING_LIMIT,
                                       SHADING_LIMIT)
        return field

    def __call__(self, image: np.ndarray, edited: np.ndarray, reconstruction: np.ndarray,
                 crop_from_frame: np.ndarray, crop_size: int, mask: np.ndarray,
                 out: np.ndarray | None = None, appearance: float = 1.0) -> np.ndarray:
        """The frame with the edit transferred.

        Args:
            image: [H,W,3] uint8 RGB frame (not written to unless it is ``out``).
            edited, reconstruction: E and R, [S,S,3] uint8 RGB in the aligned crop's geometry.
            crop_from_frame: 3×3 frame → crop map for a crop of side ``crop_size``.
            mask: [U,U] float32 in [0,1], the face mask at ``flow_size``.
            appearance: how much of E's appearance change to carry (0: motion only, for a
                face the model does not know; see :func:`appearance_weight`).
        """
        if np.array_equal(edited, reconstruction):
            return image.copy() if out is None else out
        self._check_mask(mask)
        return self.apply(image, self.field(edited, reconstruction, mask), crop_from_frame,
                          crop_size, mask, out=out, appearance=appearance)

    def _check_mask(self, mask: np.ndarray) -> None:
        size = self.flow_size
        if mask.shape != (size, size):
            raise ValueError(f"mask {mask.shape} must be {size}×{size} (flow_size)")

    def apply(self, image: np.ndarray, field: EditField, crop_from_frame: np.ndarray,
              crop_size: int, mask: np.ndarray, out: np.ndarray | None = None,
              appearance: float = 1.0) -> np.ndarray:
        """The frame with ``field`` (from :meth:`field`, of this frame or of an earlier one:
        it is in the crop's geometry) applied through this frame's ``crop_from_frame`` and
        limited by this frame's ``mask`` [U,U]; the other arguments as in :meth:`__call__`."""
        if out is None:
            out = image.copy()
        self._check_mask(mask)
        size = self.flow_size
        crop_from_frame = np.diag([size / crop_size, size / crop_size, 1.0]) @ crop_from_frame
        box = frame_box(mask, crop_from_frame, image.shape)
        if box is None:
            return out
        bx0, by0, bx1, by1 = box
        # Everything the frame needs, stacked at U and carried into the face box by one warp
        # [h,w,4]: the flow already in frame pixels (the crop map is affine, so its linear
        # part commutes with the bilinear resampling), the shading and the blend's alpha.
        support = motion_support(mask)
        frame_from_crop = np.linalg.inv(crop_from_frame)[:2, :2].astype(np.float32)
        carried = (field.brightness is not None and self.residual_sigma is not None
                   and appearance > 0)
        shading = (field.brightness[..., 0] * mask * np.float32(min(appearance, 1.0))
                   if carried else np.zeros_like(mask))
        flow = field.masked_flow(mask) @ frame_from_crop.T
        flow[(np.abs(flow) < STILL_SHIFT).all(axis=2)] = 0.0  # moves nothing: not resampled
        layers = [flow, shading, support]
        if field.paint is not None:   # drawn, not the model's: carried on any face
            layers.append(field.paint * mask[..., None])
        stacked = np.dstack(layers)
        crop_from_box = crop_from_frame @ np.array([[1, 0, bx0], [0, 1, by0], [0, 0, 1]],
                                                   np.float64)
        in_box = cv2.warpAffine(stacked, cv_inverse_map(np.linalg.inv(crop_from_box)),
                                (bx1 - bx0, by1 - by0),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # resampled in place in ``out`` unless that is the frame being read
        moved = (image[by0:by1, bx0:bx1].copy() if np.may_share_memory(out, image)
                 else out[by0:by1, bx0:bx1])
        self._resample(image, in_box[..., :2], bx0, by0, moved)
        if carried:
            shading = np.empty(moved.shape, np.float32)
            cv2.mixChannels([in_box], [shading], [2, 0, 2, 1, 2, 2])    # grey → [h,w,3]
            moved = cv2.add(moved, shading, dtype=cv2.CV_8U)  # saturating, rounded
        if field.paint is not None:
            _paint_over(moved, in_box[..., 4:8])
        # The moved pixels are the frame's own, so the motion may reach the mask's feather at
        # full strength (a jaw that drops crosses it); the residual keeps the face mask.
        alpha = np.ascontiguousarray(in_box[..., 3])
        # alpha·moved + (1 − alpha)·frame, rounded; exactly the frame where alpha is 0
        out[by0:by1, bx0:bx1] = cv2.blendLinear(moved, np.ascontiguousarray(
            image[by0:by1, bx0:bx1]), alpha, 1.0 - alpha)
        return out

    def _resample(self, image: np.ndarray, flow: np.ndarray, x0: int, y0: int,
                  moved: np.ndarray) -> None:
        """Write into ``moved`` (the frame's [y0:y0+h, x0:x0+w] box, holding its pixels) the
        ``image`` [H,W,3] resampled (Lanczos, 8×8) along ``flow`` [h,w,2] (frame pixels).

        ``flow`` must have its two channels adjacent ([..., :2] of a float32 array). Only
        where something moves (the mouth, cheeks and eyes for a smile, about a third of the
        face box): elsewhere the flow is 0 (:data:`STILL_SHIFT`) and resampling at whole
        pixels gives the pixel itself. With ``restrict_to_motion`` the box is cut into bands of
        :data:`RESAMPLE_BAND` rows, each resampled across its moving columns only. (Cubic
        resampling softened the moved face: on the held-out frames, Laplacian sharpness 0.76 ×
        the input's at smile 2 and 3, against 0.80 with Lanczos — strength 0, the re-encode
        alone, is 0.80 — for about 2 ms more a 720p frame, `benchmarks/paste_cost.py`.)"""
        height, width = flow.shape[:2]
        band = RESAMPLE_BAND if self.restrict_to_motion else height
        # either component's bits set (a −0 counts as moving: resampled, it is the pixel)
        moving = flow.view(np.uint64)[..., 0] != 0
        for r0 in range(0, height, band):
            r1 = min(r0 + band, height)
            columns = np.flatnonzero(moving[r0:r1].any(axis=0))
            if columns.size == 0:
                continue
            c0, c1 = (int(columns[0]), int(columns[-1]) + 1) if self.restrict_to_motion \
                else (0, width)
            part = flow[r0:r1, c0:c1]
            xs = part[..., 0] + np.arange(x0 + c0, x0 + c1, dtype=np.float32)
            ys = part[..., 1] + np.arange(y0 + r0, y0 + r1, dtype=np.float32)[:, None]
            moved[r0:r1, c0:c1] = cv2.remap(image, xs, ys, cv2.INTER_LANCZOS4,
                                            borderMode=cv2.BORDER_REPLICATE)


def _paint_over(image: np.ndarray, paint: np.ndarray) -> None:
    """``image`` [h,w,3] uint8 (in place) under the premultiplied ``paint`` [h,w,4] float32,
    only across the rows and columns the paint reaches."""
    alpha = paint[..., 3]
    rows = np.flatnonzero((alpha > 1 / 512).any(axis=1))
    if rows.size == 0:
        return
    columns = np.flatnonzero((alpha[rows[0]:rows[-1] + 1] > 1 / 512).any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    part = paint[r0:r1, c0:c1]
    under = image[r0:r1, c0:c1].astype(np.float32)
    image[r0:r1, c0:c1] = np.clip(under * (1.0 - part[..., 3:]) + part[..., :3] + 0.5, 0,
                                  255).astype(np.uint8)


class EditField:
    """An edit's field in the aligned crop's geometry at the flow size U, before a face mask
    limits it: ``flow`` [U,U,2] float32 (E → R, small motions already zeroed),
    ``brightness`` [U,U,1] float32 (the appearance residual's brightness, 0…255 units; None
    without a residual) and ``paint`` [U,U,4] float32 (what the expression shows beyond
    motion, drawn in the output's geometry: premultiplied RGB 0…255 and alpha; None: nothing).
    :meth:`masked` gives what :meth:`EditTransfer.motion` returns."""

    def __init__(self, flow: np.ndarray, brightness: np.ndarray | None,
                 paint: np.ndarray | None = None) -> None:
        self.flow = flow
        self.brightness = brightness
        self.paint = paint

    def masked_flow(self, mask: np.ndarray) -> np.ndarray:
        """[U,U,2] float32: the flow attenuated by :func:`motion_support` of ``mask``."""
        return (self.flow * motion_support(mask)[..., None]).astype(np.float32)

    def moved(self, key_points: np.ndarray, points: np.ndarray) -> EditField:
        """The field moved with the face from the crop where its landmarks are ``key_points``
        to one where they are ``points`` ([N,2], both at U; :func:`~vidinv.face.keyframes.
        follow_map`, one map for flow and brightness); the flow's vectors turn and scale with
        the face."""
        maps = follow_map(self.flow.shape[0], key_points, points)
        flow = resample_followed(self.flow, maps)
        linear = affine_map(points, key_points)[:, :2]  # this crop -> the key's, 2×2
        flow = (flow @ np.linalg.inv(linear).T.astype(np.float32)).astype(np.float32)
        brightness = (None if self.brightness is None
                      else resample_followed(self.brightness, maps))
        paint = None if self.paint is None else resample_followed(self.paint, maps)
        return EditField(flow, brightness, paint)

    def masked(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flow [U,U,2], residual [U,U,3]) float32 limited by ``mask`` [U,U]."""
        size = self.flow.shape[0]
        if self.brightness is None:
            return self.masked_flow(mask), np.zeros((size, size, 3), np.float32)
        residual = self.brightness * mask[..., None]
        return self.masked_flow(mask), np.repeat(residual, 3, axis=2)


def fit_actions(edited: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray,
                fields: list[np.ndarray], rounds: int = 2,
                fixed: list[float | None] | None = None) -> list[float]:
    """How far the model's edit goes along each expression's motion: the scales s_k in
    [0, :data:`MAX_ACTION`] for which R moved by Σ s_k·fields[k] looks most like E (least
    squared difference inside ``mask``; a search over :data:`ACTION_STEPS` values of each s,
    refined by a parabola through the best and its neighbours; several fields in turn,
    ``rounds`` times).

    This is the model's motion read in the action units it was taught: a 64-px model's edit
    is soft, and optical flow between two soft renders finds only part of its motion (about
    half of a smile's, on the real clip) and mixes in the render's noise — a lopsided,
    rippling mouth; the fitted field moves the corners, cheeks and lids together, as the
    expression does, by as much as the model's edit shows.

    ``edited``, ``reconstruction``: [U,U,3] uint8 at the flow size; ``mask`` [U,U] float32;
    ``fields``: [U,U,2] float32 (already limited to where the motion is carried). The error is
    taken on a half-size copy (U/2: the model's own resolution for U = 128). ``fixed``: a
    scale per field that is not fitted but kept (None: fitted), e.g. 1 for the kinds applied as
    asked (:data:`~vidinv.face.expressions.DRAWN_KINDS`); the others are fitted with those in
    place.
    """
    fixed = list(fixed) if fixed is not None else [None] * len(fields)
    half = edited.shape[0] // 2
    target = cv2.resize(edited, (half, half), interpolation=cv2.INTER_AREA).astype(np.float32)
    small_r = cv2.resize(reconstruction, (half, half), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(mask, (half, half), interpolation=cv2.INTER_AREA)[..., None]
    small = [cv2.resize(f, (half, half), interpolation=cv2.INTER_AREA) * np.float32(0.5)
             for f in fields]
    xs, ys = np.meshgrid(np.arange(half, dtype=np.float32), np.arange(half, dtype=np.float32))
    scales = [0.0 if f is None else float(f) for f in fixed]
    grid = np.linspace(0.0, MAX_ACTION, ACTION_STEPS)
    free = [k for k, f in enumerate(fixed) if f is None]

    def error(flow: np.ndarray) -> float:
        moved = cv2.remap(small_r, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        return float((weight * (moved.astype(np.float32) - target) ** 2).sum())

    for _ in range(rounds if len(free) > 1 else 1):
        for k in free:
            field = small[k]
            rest = sum((np.float32(s) * f for j, (s, f) in enumerate(zip(scales, small,
                                                                          strict=True))
                        if j != k), np.zeros_like(field))
            errors = np.array([error(rest + np.float32(s) * field) for s in grid])
            best = int(np.argmin(errors))
            scale = float(grid[best])
            if 0 < best < len(grid) - 1:
                e0, e1, e2 = errors[best - 1:best + 2]
                curve = e0 - 2 * e1 + e2
                if curve > 0:
                    step = grid[1] - grid[0]
                    scale += float(np.clip(0.5 * (e0 - e2) / curve, -0.5, 0.5)) * step
            scales[k] = scale
    return scales


def smooth_flow(flow: np.ndarray, image: np.ndarray, sigma: float) -> np.ndarray:
    """``flow`` [U,U,2] smoothed by a normalised convolution of width ``sigma`` (U-pixels),
    weighted by how well each pixel's motion is measured: the squared gradient of ``image``
    [U,U] uint8 (the edited face, where the flow is anchored). Optical flow on a small model's
    soft renders is right at edges (lips, lids, the nose's outline) and guessed between them;
    a plain blur wide enough to remove the guesses' ripples (zig-zag lips) also shrank the
    edges' motion; this keeps it and carries it into the smooth skin around."""
    grey = image.astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    weight = gx * gx + gy * gy
    weight += np.float32(1e-3 * float(weight.mean()) + 1e-6)   # flat images: a plain blur
    spread = cv2.GaussianBlur(flow * weight[..., None], (0, 0), sigma)
    total = cv2.GaussianBlur(weight, (0, 0), sigma)
    return (spread / total[..., None]).astype(np.float32)


def motion_support(mask: np.ndarray) -> np.ndarray:
    """Where the motion is carried at full strength: the face mask [U,U] doubled and clipped
    (1 from the middle of its feather inwards, fading to 0 where the mask does). Multiplying
    the flow by the mask and blending by it again carried mask² of the motion at the chin and
    cheeks (a dropping jaw kept about half its motion)."""
    return np.minimum(mask * np.float32(2.0), np.float32(1.0))


def appearance_weight(source: np.ndarray, reconstruction: np.ndarray) -> float:
    """How far to trust the model's appearance on this face, 0…1: the PSNR of R against the
    source crop ``source`` [S,S,3] (area-resized to R's side) ramped over :data:`KNOWN_PSNR`.
    A model that reconstructs the face knows it; one that renders someone else does not, and
    then only the motion of its edit is carried (its teeth or lips would be that person's).
    Both uint8; the PSNR is for data range 255 (face/ sits below metrics/, so it is here)."""
    side = reconstruction.shape[0]
    small = (source if source.shape[0] == side else
             cv2.resize(source, (side, side), interpolation=cv2.INTER_AREA))
    error = float(np.mean((small.astype(np.float64) - reconstruction.astype(np.float64)) ** 2))
    quality = math.inf if error <= 0.0 else 10.0 * math.log10(255.0 ** 2 / error)
    low, high = KNOWN_PSNR
    return float(np.clip((quality - low) / (high - low), 0.0, 1.0))
