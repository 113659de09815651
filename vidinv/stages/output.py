"""The output stages: keep the decoded picture, put original and result side by side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from vidinv.frame import Frame

ORIGINAL = "original"


class KeepOriginal:
    """Remembers the decoded image in ``extras['original']`` (for side-by-side output)."""

    latency = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            frame.extras[ORIGINAL] = frame.image
            yield frame


class SideBySide:
    """Replaces ``image`` by original | result, side by side ([H, 2W, 3])."""

    latency = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            frame.image = np.concatenate([frame.extras.get(ORIGINAL, frame.image), frame.image],
                                         axis=1)
            yield frame
