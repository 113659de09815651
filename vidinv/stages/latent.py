"""Temporal smoothing of the encoder's codes (W+ and the feature tensor) as a streaming stage.

Modes (the same as the crop's, see :mod:`vidinv.face.smoothing`):

* ``none``: pass through;
* ``causal``: exponential moving average, zero look-ahead (live use);
* ``centred``: Gaussian window of σ frames, ``latency = radius`` frames held back, the run's ends
  reflected (files). Frames without a face end a run and pass through.

``fine_layers_from``: optionally replace the W+ codes of layers ≥ L by their running mean since
the start of the clip (fine layers carry texture and flicker most; STIT averages them over the
clip, which a streaming stage approximates by the mean of the frames seen so far).
"""

from __future__ import annotations

import typing
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from vidinv.config import Smoothing
from vidinv.face.smoothing import (
    CentredGaussianWindow,
    EmaFilter,
    gaussian_kernel,
    reflect_index,
)
from vidinv.frame import Frame


def _pack(frame: Frame) -> np.ndarray:
    """w [L,512] and features [C,h,w] of a frame as one float64 vector."""
    parts = [frame.w.detach().cpu().numpy().ravel()]
    if frame.features is not None:
        parts.append(frame.features.detach().cpu().numpy().ravel())
    return np.concatenate(parts).astype(np.float64)


def _unpack(frame: Frame, vector: np.ndarray) -> None:
    """The smoothed vector back into the frame, on the device the codes came from."""
    count = frame.w.numel()
    frame.w = torch.from_numpy(vector[:count].astype(np.float32)).reshape(
        frame.w.shape).to(frame.w.device)
    if frame.features is not None:
        frame.features = torch.from_numpy(vector[count:].astype(np.float32)).reshape(
            frame.features.shape).to(frame.features.device)


Codes = tuple[torch.Tensor, ...]  # (w [L,512], features [C,h,w]) or (w,)


def _codes(frame: Frame) -> Codes:
    return (frame.w,) if frame.features is None else (frame.w, frame.features)


def _set_codes(frame: Frame, codes: Codes) -> None:
    frame.w = codes[0]
    if frame.features is not None:
        frame.features = codes[1]


class _DeviceWindow:
    """:class:`~vidinv.face.smoothing.CentredGaussianWindow` for one σ over torch tensors where
    they are: the same streaming (``radius`` frames held, run ends reflected), in the tensors'
    own dtype on their own device."""

    def __init__(self, sigma: float, radius: int) -> None:
        self.radius = max(int(radius), 0)
        self._weights = [float(w) for w in gaussian_kernel(sigma, self.radius)]
        self._values: deque[Codes] = deque()  # run positions [self._first, ...]
        self._items: deque[Frame] = deque()
        self._first = self._next = self._count = 0

    def _smoothed(self, position: int, length: int | None) -> Codes:
        total: list[torch.Tensor] | None = None
        for offset, weight in zip(range(-self.radius, self.radius + 1), self._weights,
                                  strict=True):
            index = position + offset
            if index < 0 or (length is not None and index >= length):
                index = reflect_index(index, length if length is not None else self._count)
            values = self._values[index - self._first]
            if total is None:
                total = [weight * value for value in values]
            else:
                for part, value in zip(total, values, strict=True):
                    part.add_(value, alpha=weight)
        assert total is not None
        return tuple(total)

    def push(self, frame: Frame) -> list[tuple[Frame, Codes]]:
        self._values.append(_codes(frame))
        self._items.append(frame)
        self._count += 1
        ready = []
        while self._items and self._next + self.radius < self._count:
            ready.append((self._items.popleft(), self._smoothed(self._next, None)))
            self._next += 1
            while self._first < self._next - self.radius:
                self._values.popleft()
                self._first += 1
        return ready

    def end_run(self) -> list[tuple[Frame, Codes]]:
        ready = []
        while self._items:
            ready.append((self._items.popleft(), self._smoothed(self._next, self._count)))
            self._next += 1
        self._values.clear()
        self._first = self._next = self._count = 0
        return ready


class SmoothLatents:
    """Smooths ``frame.w`` and ``frame.features`` over time; never drops or adds frames.

    Args:
        mode: ``none``, ``causal`` (EMA with ``alpha``) or ``centred`` (Gaussian, ``sigma``
            frames, window radius ⌈3σ⌉ unless given).
        fine_layers_from: if set, W+ layers from this index on are replaced by their running
            mean over the clip's face frames.
        on_device: smooth the codes as torch tensors where they are, in their dtype (no copy
            to the host); None (default): for codes on a CUDA device, while CPU codes take the
            float64 NumPy path (the results of earlier releases, bit for bit).
    """

    def __init__(self, mode: Smoothing = "none", *, alpha: float = 0.5,
                 sigma: float = 1.5, radius: int | None = None,
                 fine_layers_from: int | None = None, on_device: bool | None = None) -> None:
        if mode not in typing.get_args(Smoothing):
            raise ValueError(f"latent smoothing must be one of "
                             f"{', '.join(typing.get_args(Smoothing))}, not {mode!r}")
        self.mode = mode
        self.alpha = alpha
        self.sigma = sigma
        self.radius = radius if radius is not None else int(np.ceil(3 * sigma))
        self.fine_layers_from = fine_layers_from
        self.on_device = on_device

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
        total: torch.Tensor | None = None
        count = 0
        start = self.fine_layers_from
        for frame in frames:
            if frame.w is not None:
                fine = frame.w[start:]
                total = fine.clone() if total is None else total + fine
                count += 1
                frame.w = torch.cat([frame.w[:start], total / count])
            yield frame

    def _device_path(self, frame: Frame) -> bool:
        if self.on_device is not None:
            return self.on_device
        return frame.w.device.type == "cuda"

    def _causal(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        ema = EmaFilter(self.alpha)
        state: Codes | None = None  # the device path's EMA
        for frame in frames:
            if frame.w is None:
                ema.reset()
                state = None
            elif self._device_path(frame):
                codes = _codes(frame)
                state = codes if state is None else tuple(
                    s + self.alpha * (c - s) for s, c in zip(state, codes, strict=True))
                _set_codes(frame, state)
            else:
                _unpack(frame, ema(_pack(frame)))
            yield frame

    def _centred(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        window: CentredGaussianWindow[Frame] | _DeviceWindow | None = None
        for frame in frames:
            if frame.w is None:
                if window is not None:
                    yield from self._finish(window.end_run())
                yield frame
                continue
            if isinstance(window, _DeviceWindow) or (window is None
                                                     and self._device_path(frame)):
                window = window or _DeviceWindow(self.sigma, self.radius)
                yield from self._finish(window.push(frame))
                continue
            vector = _pack(frame)
            if window is None:
                window = CentredGaussianWindow(np.full(vector.shape, self.sigma), self.radius)
            yield from self._finish(window.push(frame, vector))
        if window is not None:
            yield from self._finish(window.end_run())

    @staticmethod
    def _finish(pairs: list[tuple[Frame, np.ndarray]] | list[tuple[Frame, Codes]]
                ) -> Iterator[Frame]:
        for frame, smoothed in pairs:
            if isinstance(smoothed, tuple):
                _set_codes(frame, smoothed)
            else:
                _unpack(frame, smoothed)
            yield frame
