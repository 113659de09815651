"""Temporal smoothing of the encoder's codes (W+ and the feature tensor) as a streaming stage.

Modes (the same as the crop's, see :mod:`vidinv.face.smoothing`):

* ``none``: pass through;
* ``causal``: exponential moving average, zero look-ahead (live use);
* ``centred``: Gaussian window of σ frames, ``latency = radius`` frames held back, the run's ends
  reflected (files). Each face (identity of ``Frame.slots``) is smoothed on its own; a frame
  without it ends its run. Frames without a face pass through.

A face between key frames (``carried``, :class:`~vidinv.stages.face.ChooseKeyFrames`) has no
codes: its run goes on, and the filters see its key frames only; with ``timed`` (how the wiring
builds it when key frames are on) σ and α still count frames.

``fine_layers_from``: optionally replace the W+ codes of layers ≥ L by their running mean since
the start of the clip (fine layers carry texture and flicker most; STIT averages them over the
clip, which a streaming stage approximates by the mean of the frames seen so far).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from vidinv.config import Smoothing
from vidinv.face.smoothing import (
    CentredGaussianWindow,
    CentredWindow,
    EmaFilter,
    FilterPerFace,
    gaussian_kernel,
    reflect_index,
    smooth_each_face_centred,
)
from vidinv.frame import FaceSlot, Frame


def _pack(face: FaceSlot) -> np.ndarray:
    """w [L,512] and features [C,h,w] of a face as one float64 vector."""
    parts = [face.w.detach().cpu().numpy().ravel()]
    if face.features is not None:
        parts.append(face.features.detach().cpu().numpy().ravel())
    return np.concatenate(parts).astype(np.float64)


def _unpack(face: FaceSlot, vector: np.ndarray) -> None:
    """The smoothed vector back into the face, on the device the codes came from."""
    count = face.w.numel()
    face.w = torch.from_numpy(vector[:count].astype(np.float32)).reshape(
        face.w.shape).to(face.w.device)
    if face.features is not None:
        face.features = torch.from_numpy(vector[count:].astype(np.float32)).reshape(
            face.features.shape).to(face.features.device)


Codes = tuple[torch.Tensor, ...]  # (w [L,512], features [C,h,w]) or (w,)


def _codes(face: FaceSlot | Frame) -> Codes:
    return (face.w,) if face.features is None else (face.w, face.features)


def _set_codes(face: FaceSlot | Frame, codes: Codes) -> None:
    face.w = codes[0]
    if face.features is not None:
        face.features = codes[1]


class _DeviceWindow(CentredWindow[object, Codes]):
    """The centred Gaussian of :class:`~vidinv.face.smoothing.CentredGaussianWindow` for one σ
    over torch tensors where they are (its streaming, from :class:`CentredWindow`), in the
    tensors' own dtype on their own device."""

    def __init__(self, sigma: float, radius: int) -> None:
        super().__init__(radius)
        self._weights = [float(w) for w in gaussian_kernel(sigma, self.radius)]

    def _combine(self, values: list[Codes]) -> Codes:
        return _weighted_codes(self._weights, values)


def _weighted_codes(weights: list[float], values: list[Codes]) -> Codes:
    """Σ weights[k] · values[k] of tuples of tensors, part by part, in the tensors' own dtype
    and device (summed in order, in place into the first product)."""
    total = [weights[0] * part for part in values[0]]
    for weight, codes in zip(weights[1:], values[1:], strict=True):
        for part, value in zip(total, codes, strict=True):
            part.add_(value, alpha=weight)
    return tuple(total)


class _TimedWindow(CentredWindow[object, tuple[int, object]]):
    """A centred Gaussian over values that come at uneven frames: each value is (frame index,
    codes: a float64 vector or a tuple of tensors); the ``2·radius+1`` values around a
    position weigh by their distance in frames from it (σ frames; 0 beyond ``radius``). A
    run's end is reflected in time too, so on consecutive frames this is the plain window."""

    def __init__(self, sigma: float, radius: int) -> None:
        super().__init__(radius)
        self.sigma = float(sigma)

    def _time(self, index: int, count: int) -> int:
        """The frame of run position ``index``; beyond the run's ends, reflected as the values
        are (half-sample, about position −½ and ``count`` − ½)."""
        if index < 0:
            return 2 * self._values[0 - self._first][0] - 1 - self._time(-index - 1, count)
        if index >= count:
            return (2 * self._values[count - 1 - self._first][0] + 1
                    - self._time(2 * count - 1 - index, count))
        return self._values[index - self._first][0]

    def _smoothed(self, position: int, length: int | None) -> object:
        count = length if length is not None else self._count
        rows, times = [], []
        for offset in range(-self.radius, self.radius + 1):
            index = position + offset
            source = index
            if index < 0 or (length is not None and index >= length):
                source = reflect_index(index, count)
            rows.append(self._values[source - self._first][1])
            times.append(self._time(index, count))
        offsets = np.array(times, np.float64) - times[self.radius]
        if self.sigma > 0:
            weights = np.exp(-0.5 * (offsets / self.sigma) ** 2)
        else:
            weights = (offsets == 0).astype(np.float64)
        weights[np.abs(offsets) > self.radius] = 0.0
        weights = weights / weights.sum()
        if isinstance(rows[0], np.ndarray):
            stacked = np.stack(rows)
            # the plain window's contraction, [K,D] weights and all (the same sums, bit for bit)
            kernels = np.ascontiguousarray(np.broadcast_to(weights[:, None], stacked.shape))
            return np.einsum("kd,kd->d", kernels, stacked)
        return _weighted_codes([float(weight) for weight in weights], rows)


class SmoothLatents:
    """Smooths each face's ``w`` and ``features`` over time; never drops or adds frames.

    Args:
        mode: ``none``, ``causal`` (EMA with ``alpha``) or ``centred`` (Gaussian, ``sigma``
            frames, window radius ⌈3σ⌉ unless given).
        fine_layers_from: if set, W+ layers from this index on are replaced by their running
            mean over the clip's frames with that face.
        on_device: smooth the codes as torch tensors where they are, in their dtype (no copy
            to the host); None (default): for codes on a CUDA device, while CPU codes take the
            float64 NumPy path (the results of earlier releases, bit for bit).
        timed: σ and α count frames, not coded frames (for key frames: a face's codes come
            on its key frames only). The centred window weighs the codes around a key frame
            by their distance in frames (Gaussian of σ frames, none beyond ``radius`` frames;
            run ends reflected in time), the EMA moves by 1 − (1 − α)^gap. On consecutive
            frames (every frame coded) the results are those of ``timed=False``.
    """

    def __init__(self, mode: Smoothing = "none", *, alpha: float = 0.5,
                 sigma: float = 1.5, radius: int | None = None,
                 fine_layers_from: int | None = None, on_device: bool | None = None,
                 timed: bool = False) -> None:
        if mode not in typing.get_args(Smoothing):
            raise ValueError(f"latent smoothing must be one of "
                             f"{', '.join(typing.get_args(Smoothing))}, not {mode!r}")
        self.mode = mode
        self.alpha = alpha
        self.sigma = sigma
        self.radius = radius if radius is not None else int(np.ceil(3 * sigma))
        self.fine_layers_from = fine_layers_from
        self.on_device = on_device
        self.timed = bool(timed)

    @property
    def latency(self) -> int:
        return self.radius if self.mode == "centred" else 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        frames = self._average_fine_layers(frames)
        if self.mode == "none":
            yield from frames
        elif self.mode == "causal":
            yield from self._causal(frames)
        else:
            yield from self._centred(frames)

    def _average_fine_layers(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        if self.fine_layers_from is None:
            yield from frames
            return
        totals: dict[int, tuple[torch.Tensor, int]] = {}  # identity -> (sum, count)
        start = self.fine_layers_from
        for frame in frames:
            for face in _coded_faces(frame):
                fine = face.w[start:]
                total, count = totals.get(face.identity, (None, 0))
                total, count = (fine.clone() if total is None else total + fine), count + 1
                totals[face.identity] = (total, count)
                face.w = torch.cat([face.w[:start], total / count])
            yield frame

    def _device_path(self, face: FaceSlot | Frame) -> bool:
        if self.on_device is not None:
            return self.on_device
        return face.w.device.type == "cuda"

    def _causal(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        filters = FilterPerFace(lambda: EmaFilter(self.alpha))
        states: dict[int, Codes] = {}  # the device path's EMA, per face
        last_coded: dict[int, int] = {}  # timed: the frame each face was last coded in
        for frame in frames:
            faces = _coded_faces(frame)
            present = {face.identity for face in faces} | _carried_identities(frame)
            filters.keep_only(present)
            for identity in [i for i in states if i not in present]:
                del states[identity]
            for identity in [i for i in last_coded if i not in present]:
                del last_coded[identity]
            for face in faces:
                alpha = self.alpha
                if self.timed:
                    gap = frame.index - last_coded.get(face.identity, frame.index - 1)
                    alpha = 1.0 - (1.0 - self.alpha) ** max(gap, 1)
                    last_coded[face.identity] = frame.index
                if self._device_path(face):
                    codes = _codes(face)
                    state = states.get(face.identity)
                    state = codes if state is None else tuple(
                        s + alpha * (c - s) for s, c in zip(state, codes, strict=True))
                    states[face.identity] = state
                    _set_codes(face, state)
                else:
                    ema = filters[face.identity]
                    ema.alpha = alpha
                    _unpack(face, ema(_pack(face)))
            yield frame

    def _centred(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        def faces_of(frame: Frame) -> list:
            faces = [(face, _codes(face) if self._device_path(face) else _pack(face))
                     for face in _coded_faces(frame)]
            if self.timed:
                return [(face, (frame.index, codes)) for face, codes in faces]
            return faces

        def make_window(vector):
            if self.timed:
                return _TimedWindow(self.sigma, self.radius)
            if isinstance(vector, tuple):
                return _DeviceWindow(self.sigma, self.radius)
            return CentredGaussianWindow(np.full(vector.shape, self.sigma), self.radius)

        def finish(face: FaceSlot, smoothed) -> None:
            if isinstance(smoothed, tuple):
                _set_codes(face, smoothed)
            else:
                _unpack(face, smoothed)

        return smooth_each_face_centred(frames, faces_of, make_window, finish,
                                        passed_over=_carried_identities)


def _carried_identities(frame: Frame) -> set[int]:
    """The faces of ``frame`` between key frames (not coded; their runs go on)."""
    return {face.identity for face in frame.slots if face.carried}


def _coded_faces(frame: Frame) -> list[FaceSlot]:
    """The faces of ``frame`` the encoder coded."""
    return [face for face in frame.slots if face.w is not None]
