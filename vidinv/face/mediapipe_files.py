"""The model files MediaPipe's face solutions load, checked before MediaPipe sees them.

MediaPipe's C++ side does not survive a bad file: a missing ``.tflite`` raises an error deep in
the graph (a traceback), and a corrupt one crashes the process with nothing on stderr. So
before a graph is created, every file it will load is checked here, and a problem is one line
naming the file and the fix (reinstall MediaPipe, or use the dlib backend):

1. it exists and is a regular, non-empty file;
2. its header: a ``.tflite`` model is a FlatBuffer with the ``TFL3`` identifier at byte 4; a
   ``.binarypb`` graph parses as a ``CalculatorGraphConfig``;
3. its sha256 is the one the installed distribution recorded for it (the wheel's ``RECORD``
   file), when the install has that record — this catches any damage the header cannot.

Each file is checked once per process (keyed by its path, size and modification time).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

from vidinv.face.errors import LandmarkBackendUnavailableError

#: Files (relative to the ``mediapipe`` package folder) each solution vidinv uses loads.
FACE_DETECTION_FULL_RANGE = (
    "modules/face_detection/face_detection_full_range_cpu.binarypb",
    "modules/face_detection/face_detection_full_range_sparse.tflite",
)
FACE_MESH = (
    "modules/face_landmark/face_landmark_front_cpu.binarypb",
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_landmark/face_landmark.tflite",
)
FACE_MESH_REFINED = (*FACE_MESH[:2], "modules/face_landmark/face_landmark_with_attention.tflite")

_FIX = ("reinstall MediaPipe (pip install --force-reinstall mediapipe) or use the dlib "
        "landmark backend (--set face.landmarks=dlib)")


class MediaPipeModelFileError(LandmarkBackendUnavailableError):
    """A model file MediaPipe needs is missing or damaged."""


def package_folder() -> Path:
    """The installed ``mediapipe`` package folder (not resolved: MediaPipe finds its files
    through the same, possibly symlinked, path)."""
    import mediapipe

    return Path(mediapipe.__file__).parent


@functools.cache
def _recorded_hashes(folder: str) -> dict[str, str]:
    """``path under the package -> sha256 (urlsafe base64, no padding)`` from the ``RECORD``
    of the wheel that installed the package ``folder`` ({} when there is none)."""
    import csv

    root = Path(folder).parent
    for info in sorted(root.glob("mediapipe*.dist-info")):
        try:
            with open(info / "RECORD", newline="", encoding="utf-8") as record:
                rows = list(csv.reader(record))
        except OSError:
            continue
        hashes = {}
        for row in rows:
            if len(row) >= 2 and row[0].startswith("mediapipe/") \
                    and row[1].startswith("sha256="):
                hashes[row[0].removeprefix("mediapipe/")] = row[1].removeprefix("sha256=")
        if hashes:
            return hashes
    return {}


def _problem(path: Path, relative: str, recorded: dict[str, str]) -> str | None:
    if not path.exists():
        return "is missing"
    if not path.is_file():
        return "is not a file"
    data = path.read_bytes()
    if not data:
        return "is empty"
    if path.suffix == ".tflite" and (len(data) < 8 or data[4:8] != b"TFL3"):
        return "is not a TFLite model (no TFL3 header)"
    if path.suffix == ".binarypb":
        try:
            from google.protobuf.message import DecodeError
            from mediapipe.framework import calculator_pb2

            graph = calculator_pb2.CalculatorGraphConfig()
            graph.ParseFromString(data)
            if not graph.node:
                return "holds no graph"
        except ImportError:
            pass
        except (DecodeError, RuntimeError, ValueError):
            return "is not a MediaPipe graph"
    expected = recorded.get(relative)
    if expected is not None:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != expected:
            return "is damaged (its sha256 is not the one MediaPipe's install recorded)"
    return None


@functools.cache
def _checked(path: str, size: int, mtime_ns: int, relative: str, folder: str) -> str | None:
    """:func:`_problem`, once per file version (path, size, modification time)."""
    return _problem(Path(path), relative, _recorded_hashes(folder))


def check_model_files(relatives: tuple[str, ...], folder: Path | None = None) -> None:
    """MediaPipeModelFileError (one line) unless every file in ``relatives`` (paths under the
    ``mediapipe`` package ``folder``) is present and whole."""
    folder = package_folder() if folder is None else Path(folder)
    for relative in relatives:
        path = folder / relative
        try:
            stat = path.stat()
        except OSError:
            problem = _problem(path, relative, {})
        else:
            problem = _checked(str(path), stat.st_size, stat.st_mtime_ns, relative, str(folder))
        if problem is not None:
            raise MediaPipeModelFileError(f"MediaPipe's model file {path} {problem}; {_FIX}")
