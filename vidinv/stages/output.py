"""The output stages: keep the decoded picture, put original and result side by side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from vidinv.frame import Frame


class KeepOriginal:
    """Remembers the decoded image in ``original`` (for side-by-side output)."""

    latency = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            frame.original = frame.image
            yield frame


class SideBySide:
    """Replaces ``image`` by original | result, side by side ([H, 2W, 3])."""

    latency = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            original = frame.original if frame.original is not None else frame.image
            frame.image = np.concatenate([original, frame.image], axis=1)
            yield frame
