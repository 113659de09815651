"""Temporal smoothing of the crop parameters (c, x, y) so the aligned face does not jitter.

Two kinds, both acting on the (6,) vector ``CropQuad.to_vector()`` = (cx, cy, xx, xy, yx, yy):

* causal filters for live video, zero look-ahead: :class:`OneEuroFilter` (adaptive: smooths
  hard when the head is still, little when it moves) and :class:`EmaFilter`;
* a centred Gaussian window for files (STIT: σ = 1 frame on the centre, 3 on the axes),
  :class:`CentredGaussianWindow`, which streams: it holds ``radius`` frames, pads the ends of
  each run of frames with a face by reflection (as ``scipy.ndimage.gaussian_filter1d`` in
  ``mode="reflect"``) and never changes the number of frames.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

import numpy as np

from vidinv.frame import FaceSlot, Frame

Item = TypeVar("Item")
Value = TypeVar("Value")

AXES = slice(2, 6)


def quad_sigmas(sigma_centre: float, sigma_axes: float) -> np.ndarray:
    """(6,) per-component σ for a CropQuad vector: centre first, then the two axes."""
    return np.array([sigma_centre] * 2 + [sigma_axes] * 4, dtype=np.float64)


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """(2·radius+1,) normalised Gaussian weights; σ = 0 gives the identity."""
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    if sigma <= 0:
        return (offsets == 0).astype(np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def reflect_index(index: int, length: int) -> int:
    """Index into a run of ``length`` values, extended by half-sample reflection
    (``d c b a | a b c d | d c b a``), the ``reflect`` mode of scipy.ndimage."""
    period = 2 * length
    index %= period
    return period - 1 - index if index >= length else index


class CentredWindow(Generic[Item, Value]):
    """The streaming of a centred window over a run, whatever the values are.

    :meth:`push` takes an item and its value and returns the (item, smoothed value) pairs that
    became ready — each item comes out ``radius`` pushes later; :meth:`end_run` ends a run
    (a frame without a face, or the end of the clip) and returns the held items, smoothed with
    the run's end reflected. Nothing is dropped or added; at most ``radius`` items are held.
    Subclasses say how the ``2·radius+1`` values around a position combine (:meth:`_combine`).
    """

    def __init__(self, radius: int) -> None:
        self.radius = max(int(radius), 0)
        self._values: deque[Value] = deque()  # run positions [self._first, ...]
        self._items: deque[Item] = deque()  # run positions [self._next, ...]
        self._first = 0  # run position of self._values[0]
        self._next = 0  # run position of the next item to emit
        self._count = 0  # values pushed in this run

    @property
    def latency(self) -> int:
        return self.radius

    def _combine(self, values: list[Value]) -> Value:
        """The smoothed value from the window's values, oldest first (2·radius+1 of them)."""
        raise NotImplementedError

    def _prepare(self, value: Value) -> Value:
        return value

    def _smoothed(self, position: int, length: int | None) -> Value:
        rows = []
        for offset in range(-self.radius, self.radius + 1):
            index = position + offset
            if index < 0 or (length is not None and index >= length):
                index = reflect_index(index, length if length is not None else self._count)
            rows.append(self._values[index - self._first])
        return self._combine(rows)

    def _drop_old(self) -> None:
        while self._first < self._next - self.radius:
            self._values.popleft()
            self._first += 1

    def push(self, item: Item, value: Value) -> list[tuple[Item, Value]]:
        self._values.append(self._prepare(value))
        self._items.append(item)
        self._count += 1
        ready = []
        while self._items and self._next + self.radius < self._count:
            ready.append((self._items.popleft(), self._smoothed(self._next, None)))
            self._next += 1
            self._drop_old()
        return ready

    def end_run(self) -> list[tuple[Item, Value]]:
        ready = []
        while self._items:
            ready.append((self._items.popleft(), self._smoothed(self._next, self._count)))
            self._next += 1
        self._values.clear()
        self._first = self._next = self._count = 0
        return ready


class CentredGaussianWindow(CentredWindow[Item, np.ndarray]):
    """Streaming centred Gaussian smoothing of vectors, one σ per component
    (the streaming of :class:`CentredWindow`; values are float64 vectors [D])."""

    def __init__(self, sigmas: Sequence[float] | np.ndarray, radius: int | None = None,
                 truncate: float = 3.0) -> None:
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        if radius is None:
            radius = int(math.ceil(truncate * float(self.sigmas.max())))
        super().__init__(radius)
        unique, which = np.unique(self.sigmas, return_inverse=True)  # few distinct σ, many dims
        kernels = np.stack([gaussian_kernel(s, self.radius) for s in unique], axis=1)
        self._kernels = kernels[:, which.ravel()]

    def _prepare(self, value: np.ndarray) -> np.ndarray:
        return np.asarray(value, dtype=np.float64)

    def _combine(self, values: list[np.ndarray]) -> np.ndarray:
        return np.einsum("kd,kd->d", self._kernels, np.stack(values))


def smooth_centred(vectors: np.ndarray, sigmas: Sequence[float] | np.ndarray,
                   radius: int | None = None, truncate: float = 3.0) -> np.ndarray:
    """[N,D] → [N,D]: the centred Gaussian of :class:`CentredGaussianWindow` on one whole run."""
    window: CentredGaussianWindow[int] = CentredGaussianWindow(sigmas, radius, truncate)
    out = np.empty_like(np.asarray(vectors, dtype=np.float64))
    pairs = [pair for i, v in enumerate(vectors) for pair in window.push(i, v)]
    for i, smoothed in pairs + window.end_run():
        out[i] = smoothed
    return out


class EmaFilter:
    """Exponential moving average: s ← s + α·(v − s). α = 1 passes values through."""

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self.alpha = float(alpha)
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def __call__(self, value: np.ndarray, time: float | None = None, scale: float = 1.0,
                 ) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._state is None:
            self._state = value.copy()
        else:
            self._state = self._state + self.alpha * (value - self._state)
        return self._state.copy()


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel & Vogel, CHI 2012) on a vector, causal.

    Each component is low-passed with cutoff ``min_cutoff + beta·|speed|`` Hz, the speed being
    the low-passed (``d_cutoff`` Hz) derivative. Speeds are measured in units of ``scale`` per
    second (the stage passes the face's half-size |x|), so ``beta`` means the same for every
    face size and resolution: at a speed of one half-face per second the cutoff rises by
    ``beta`` Hz. Times come from the frames (seconds) or, without them, ``1/fps``.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 2.0, d_cutoff: float = 1.0,
                 fps: float = 30.0) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.fps = float(fps)
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, time: float | None = None, scale: float = 1.0,
                 ) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None or self._speed is None:
            self._value = value.copy()
            self._speed = np.zeros_like(value)
            self._time = time
            return value.copy()
        dt = 1.0 / self.fps
        if time is not None and self._time is not None and time > self._time:
            dt = time - self._time
        self._time = time
        scale = scale if scale > 0 else 1.0
        speed = (value - self._value) / dt / scale
        self._speed = self._speed + self._alpha(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + self._alpha(cutoff, dt) * (value - self._value)
        return self._value.copy()


def centre_jitter(centres: np.ndarray) -> float:
    """RMS length of the second difference of [N,2] crop centres, in pixels (0 for N < 3).

    A still face gives ~0, a face moving at constant speed too; detector noise and
    frame-to-frame shaking raise it.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if len(centres) < 3:
        return 0.0
    second = centres[2:] - 2 * centres[1:-1] + centres[:-2]
    return float(np.sqrt(np.mean(np.sum(second**2, axis=1))))


# --- one smoother per face: the stages smooth each identity of Frame.slots on its own --------


def smooth_each_face_centred(
    frames: Iterable[Frame],
    faces_of: Callable[[Frame], list[tuple[FaceSlot, np.ndarray]]],
    make_window: Callable[[np.ndarray], CentredGaussianWindow],
    finish: Callable[[FaceSlot, np.ndarray], None],
    passed_over: Callable[[Frame], Iterable[int]] | None = None,
) -> Iterator[Frame]:
    """Centred smoothing of every face over the run of frames it is in, one window per identity.

    ``faces_of(frame)`` gives the frame's faces to smooth with their vectors (a face left out
    ends its run, unless ``passed_over(frame)`` names its identity: a face in the frame without
    a value, which the window skips), ``make_window(vector)`` a fresh window for a new run,
    ``finish(slot, smoothed)`` writes the result back. Frames come out in order, each once
    every face in it is smoothed: at most the windows' radius values later.
    """
    windows: dict[int, CentredGaussianWindow] = {}
    held: deque[tuple[Frame, list[int]]] = deque()  # frame, [its faces still in a window]

    def done(pairs: list) -> None:
        for (waiting, slot), smoothed in pairs:
            finish(slot, smoothed)
            waiting[0] -= 1

    for frame in frames:
        faces = faces_of(frame)
        present = {slot.identity for slot, _ in faces}
        if passed_over is not None:
            present.update(passed_over(frame))
        for identity in [i for i in windows if i not in present]:
            done(windows.pop(identity).end_run())
        waiting = [len(faces)]
        held.append((frame, waiting))
        for slot, vector in faces:
            window = windows.get(slot.identity)
            if window is None:
                window = windows[slot.identity] = make_window(vector)
            done(window.push((waiting, slot), vector))
        while held and held[0][1][0] == 0:
            yield held.popleft()[0]
    for window in windows.values():
        done(window.end_run())
    while held:
        yield held.popleft()[0]


class FilterPerFace(Generic[Item]):
    """One causal filter per identity, made by ``make`` when the identity (re)appears: a face
    missing from a frame loses its filter (its run ended), as one filter is reset."""

    def __init__(self, make: Callable[[], Item]) -> None:
        self.make = make
        self.filters: dict[int, Item] = {}

    def keep_only(self, identities: Iterable[int]) -> None:
        """Forget the filters of the faces not in ``identities`` (this frame's)."""
        keep = set(identities)
        self.filters = {i: f for i, f in self.filters.items() if i in keep}

    def __getitem__(self, identity: int) -> Item:
        if identity not in self.filters:
            self.filters[identity] = self.make()
        return self.filters[identity]
