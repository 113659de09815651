"""Per-frame codes (W+ and the feature tensor) streamed into an ``.npz`` archive."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from vidinv.errors import VidinvError
from vidinv.frame import Frame
from vidinv.io_safety import put_in_place


class LatentArchive:
    """Per-frame codes streamed into an ``.npz`` (entries ``w_000000``, ``features_000000``…).

    Written to a new hidden temporary file (created exclusively under a random name, so a
    leftover or planted file or symlink there is never written through) and renamed on
    :meth:`close` once it reads back whole; :meth:`abort` removes it. Frames without a face
    have no entries; ``frames`` lists the indices that have.
    """

    def __init__(self, path: str | Path, with_features: bool = True) -> None:
        import tempfile

        self.path = Path(path)
        self.with_features = with_features
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                   dir=self.path.parent)
        self._tmp = Path(tmp)
        try:
            self._zip = zipfile.ZipFile(os.fdopen(fd, "w+b"), "w", zipfile.ZIP_STORED)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self.frames: list[int] = []

    def _put(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.ascontiguousarray(array))

    def __call__(self, frame: Frame) -> None:
        if frame.w is None:
            return
        self._put(f"w_{frame.index:06d}", frame.w.cpu().numpy())
        if self.with_features and frame.features is not None:
            self._put(f"features_{frame.index:06d}", frame.features.cpu().numpy())
        self.frames.append(frame.index)

    def close(self) -> None:
        """Finish the archive, check that it reads back (CRCs, entries), move it into place."""
        try:
            self._put("frames", np.asarray(self.frames, dtype=np.int64))
            handle = self._zip.fp
            self._zip.close()
            if handle is not None:
                handle.close()
            with zipfile.ZipFile(self._tmp) as archive:
                damaged = archive.testzip()
                entries = len(archive.namelist())
            expected = 1 + len(self.frames) * (1 + self.with_features)
            if damaged is not None or entries < 1 + len(self.frames):
                raise VidinvError(f"{self.path}: the codes archive does not read back "
                                  f"({damaged or f'{entries} of {expected} entries'}); "
                                  "nothing was written")
            put_in_place(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        handle = self._zip.fp
        self._zip.close()
        if handle is not None:
            handle.close()
        self._tmp.unlink(missing_ok=True)
