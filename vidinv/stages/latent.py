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
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from vidinv.config import Smoothing
from vidinv.face.smoothing import CentredGaussianWindow, EmaFilter
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


class SmoothLatents:
    """Smooths ``frame.w`` and ``frame.features`` over time; never drops or adds frames.

    Args:
        mode: ``none``, ``causal`` (EMA with ``alpha``) or ``centred`` (Gaussian, ``sigma``
            frames, window radius ⌈3σ⌉ unless given).
        fine_layers_from: if set, W+ layers from this index on are replaced by their running
            mean over the clip's face frames.
    """

    def __init__(self, mode: Smoothing = "none", *, alpha: float = 0.5,
                 sigma: float = 1.5, radius: int | None = None,
                 fine_layers_from: int | None = None) -> None:
        if mode not in typing.get_args(Smoothing):
            raise ValueError(f"latent smoothing must be one of "
                             f"{', '.join(typing.get_args(Smoothing))}, not {mode!r}")
        self.mode = mode
        self.alpha = alpha
        self.sigma = sigma
        self.radius = radius if radius is not None else int(np.ceil(3 * sigma))
        self.fine_layers_from = fine_layers_from

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

    def _causal(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        ema = EmaFilter(self.alpha)
        for frame in frames:
            if frame.w is None:
                ema.reset()
            else:
                _unpack(frame, ema(_pack(frame)))
            yield frame

    def _centred(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        window: CentredGaussianWindow[Frame] | None = None
        for frame in frames:
            if frame.w is None:
                if window is not None:
                    yield from self._finish(window.end_run())
                yield frame
                continue
            vector = _pack(frame)
            if window is None:
                window = CentredGaussianWindow(np.full(vector.shape, self.sigma), self.radius)
            yield from self._finish(window.push(frame, vector))
        if window is not None:
            yield from self._finish(window.end_run())

    @staticmethod
    def _finish(pairs: list[tuple[Frame, np.ndarray]]) -> Iterator[Frame]:
        for frame, vector in pairs:
            _unpack(frame, vector)
            yield frame
