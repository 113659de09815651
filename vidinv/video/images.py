"""Image files and folders of frames, in and out (OpenCV, imported when used).

Reading: one picture or a folder of pictures (sorted in natural order, so ``frame2`` comes
before ``frame10``) as ``Frame`` records without timing (``pts``/``time_base`` ``None``).
Writing: ``Frame`` records as numbered PNG/JPEG files. Each file is written under a temporary
name and renamed, and the whole folder is written as a hidden temporary folder beside the
destination that takes the destination's name only when the ``with`` block ends without an
exception; otherwise it is deleted.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vidinv.errors import BackendUnavailableError
from vidinv.frame import Frame
from vidinv.io_safety import FinishedOrAbandoned, move_folder_into_place, write_atomically
from vidinv.native_log import native_stderr_guard
from vidinv.video.errors import NotAVideoError, VideoInputError, VideoWriteError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Video suffixes: a folder holding these is not a folder of pictures (``vidinv batch`` takes
#: them; :mod:`vidinv.batch.files` finds videos in folders by the same list).
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts")
WRITE_SUFFIXES = ("png", "jpg", "jpeg")


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise BackendUnavailableError(
            "OpenCV is needed for image files; pip install opencv-python"
        ) from e
    return cv2


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


#: The most pixels a picture may declare (80 Mpx: a 61 Mpx camera's photos pass; decoding one
#: takes about 1 GB). A 1 MB PNG can declare 20000×20000 and cost gigabytes to decode, so the
#: size in the header is checked before any pixel is decoded.
MAX_PICTURE_PIXELS = 80_000_000


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) the picture's header declares, read without decoding it (Pillow), or
    None when Pillow is missing or does not know the format (OpenCV then decides); a picture
    beyond Pillow's own limit is refused here (VideoInputError)."""
    try:
        import warnings

        from PIL import Image
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: judged below
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:  # beyond Pillow's own limit, far beyond ours
        raise VideoInputError(f"{path}: declares more pixels than vidinv takes "
                              f"({MAX_PICTURE_PIXELS // 1_000_000} Mpx); scale it down first"
                              ) from None
    except Exception:  # noqa: BLE001 - not a picture Pillow knows: OpenCV decides
        return None


def read_image(path: str | Path) -> np.ndarray:
    """Read one picture as [H,W,3] uint8 RGB (grey and alpha dropped to RGB, EXIF-upright).

    A picture whose header declares more than :data:`MAX_PICTURE_PIXELS` is refused before
    it is decoded."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"{path}: no such image file; check the path")
    size = declared_size(path)
    if size is not None and size[0] * size[1] > MAX_PICTURE_PIXELS:
        raise VideoInputError(f"{path}: declares {size[0]}×{size[1]} pixels, more than vidinv "
                              f"takes ({MAX_PICTURE_PIXELS // 1_000_000} Mpx); scale it down "
                              "first")
    data = np.fromfile(path, dtype=np.uint8)
    # libpng and libjpeg print their complaints (``libpng error: IHDR: CRC error``, ``Corrupt
    # JPEG data: …``) to fd 2 themselves; the guard keeps them off the terminal, and a file that
    # does not decode is told in one line below
    with native_stderr_guard():
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        damage = _png_damage(data.tobytes()) if data.size else "empty (0 bytes)"
        if damage:
            raise NotAVideoError(f"{path} is a damaged PNG ({damage}); re-export or re-copy it")
        raise NotAVideoError(f"{path} is not an image OpenCV can read; pass a .png or .jpg picture")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_damage(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure (None: not a PNG, or nothing found)."""
    import zlib

    if not data.startswith(_PNG_SIGNATURE):
        return None
    offset = len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8]
        end = offset + 12 + length
        if end > len(data):
            return f"cut short inside its {kind.decode('latin-1')!r} chunk"
        crc = int.from_bytes(data[end - 4:end], "big")
        if zlib.crc32(data[offset + 4:end - 4]) != crc:
            return f"checksum error in its {kind.decode('latin-1')!r} chunk"
        if kind == b"IEND":
            return None
        offset = end
    return "cut short: it has no end chunk"


def write_image(path: str | Path, image: np.ndarray, *, quality: int = 95) -> None:
    """Write [H,W,3] uint8 RGB to ``path`` (format from the suffix) atomically.

    The bytes go to a temporary file in the same folder, renamed over ``path`` when complete.
    ``quality`` is the JPEG quality (0–100); PNG is lossless.
    """
    cv2 = _cv2()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise VideoWriteError(f"cannot write {suffix or 'suffix-less'} images; use .png or .jpg")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected [H,W,3] uint8 RGB, got {image.shape} {image.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix != ".png" else []
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise VideoWriteError(f"OpenCV could not encode {path.name}")
    write_atomically(path, encoded.tobytes())


class ImageSequenceReader:
    """One picture or a folder of pictures as ``Frame`` records (pts and time_base ``None``).

    A folder's files with an image suffix (``IMAGE_SUFFIXES``) are taken in natural order;
    hidden files are skipped. Each frame's ``source_path`` names its file.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
            paths = sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES),
                           key=_natural_key)
            videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
            if videos:
                # not a picture sequence that happens to hold videos: say what it holds
                raise VideoInputError(
                    f"{path}: holds {len(videos)} video{'s' * (len(videos) != 1)} and "
                    f"{len(paths)} picture{'s' * (len(paths) != 1)}; a folder given here must "
                    "hold the frames of one clip as pictures only. For many videos use "
                    f"`vidinv batch edit {path} -o OUTDIR` (or invert); for one, name it")
            if not paths:
                raise VideoInputError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}; check the path"
                )
        elif path.is_file():
            paths = [path]
        else:
            raise VideoInputError(f"{path}: no such image file or folder; check the path")
        self.path = path
        self.paths: list[Path] = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageSequenceReader({str(self.path)!r}, {len(self.paths)} images)"

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            yield Frame(index=index, image=read_image(path), source_path=str(path))


class ImageWriter:
    """One picture out (the input was one picture): written whole on close, like the video."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frame: Frame | None = None

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.frame is None:
                raise VideoWriteError(f"no frame reached {self.path}; nothing was written")
            write_image(self.path, np.ascontiguousarray(self.frame.image))

    def write(self, frame: Frame) -> None:
        self.frame = frame


class ImageFolderWriter(FinishedOrAbandoned):
    """Write ``Frame`` records as numbered pictures into a new folder; a context manager.

    Files are named ``name_pattern.format(index=frame.index)`` plus ``.png``/``.jpg``
    (``000000.png`` …). The folder is built as a hidden temporary folder beside ``folder`` and
    renamed to it on success; if ``folder`` already exists it must be empty unless
    ``overwrite`` (then it is replaced as a whole, only after the new one is complete).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        ext: str = "png",
        quality: int = 95,
        name_pattern: str = "{index:06d}",
        overwrite: bool = False,
    ) -> None:
        ext = ext.lower().lstrip(".")
        if ext not in WRITE_SUFFIXES:
            raise VideoWriteError(f"cannot write .{ext} frames; use png or jpg")
        self.folder = Path(folder)
        self.ext = ext
        self.quality = quality
        self.name_pattern = name_pattern
        self.overwrite = overwrite
        self.frames_written = 0
        self._tmp: Path | None = None

    def open(self) -> None:
        if self._tmp is not None:
            raise RuntimeError("ImageFolderWriter is already open")
        parent = self.folder.parent
        if not parent.is_dir():
            raise VideoWriteError(f"output folder {parent} does not exist; create it first")
        if self.folder.exists():
            if not self.folder.is_dir():
                raise VideoWriteError(f"{self.folder} is a file; choose a folder name for frames")
            if any(self.folder.iterdir()) and not self.overwrite:
                raise VideoWriteError(
                    f"{self.folder} already holds files; choose a new folder or allow overwrite"
                )
        tmp = parent / f".{self.folder.name}.{secrets.token_hex(4)}.partial"
        tmp.mkdir()
        self._tmp = tmp

    def write(self, frame: Frame) -> Path:
        """Write one frame's image ([H,W,3] uint8 RGB); returns its final path."""
        if self._tmp is None:
            raise RuntimeError("ImageFolderWriter is not open; use it in a `with` block")
        name = f"{self.name_pattern.format(index=frame.index)}.{self.ext}"
        write_image(self._tmp / name, frame.image, quality=self.quality)
        self.frames_written += 1
        return self.folder / name

    def close(self) -> None:
        """Move the finished folder into place."""
        if self._tmp is None:
            return
        tmp = self._tmp
        try:
            if self.frames_written == 0:
                raise VideoWriteError(f"no frames reached {self.folder}; nothing was written")
            move_folder_into_place(tmp, self.folder)
        except BaseException:
            self.abort()
            raise
        self._tmp = None

    def abort(self) -> None:
        """Delete the temporary folder; the destination is left as it was."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
