"""Read a video file as a stream of :class:`~vidinv.frame.Frame` records.

``VideoReader`` decodes with PyAV one frame at a time (the video is never held in memory),
keeps each frame's own ``pts`` in the stream's ``time_base`` (so variable frame rate survives),
turns every frame upright according to the container's display matrix (phone videos), and
flushes the decoder at the end so the last frames, which a decoder with B-frames or frame
threads holds back, are not lost. A clip whose end is damaged yields every frame that decodes
and warns with :class:`~vidinv.video.errors.DamagedVideoWarning`; a file that cannot be read at
all raises a one-line :class:`~vidinv.video.errors.VideoInputError`.

``DecordReader`` is the same interface on decord (optional, imported when used), and
``open_video(path, backend)`` picks one.

Rotation, as FFmpeg and PyAV 18 expose it: the container's display matrix (an ``int32[9]``
16.16 fixed-point matrix) is stream side data, which the decoder attaches to every decoded
frame (``frame.side_data``, ``Type.DISPLAYMATRIX``); ``frame.rotation`` is
``av_display_rotation_get`` of it, the angle in degrees by which the matrix turns the picture
counter-clockwise. PyAV 18 exposes no stream-level getter, so :func:`probe` decodes the first
frame to read it. :func:`upright` applies the matrix the way the ``ffmpeg`` command's autorotate
does (transpose/flip for multiples of 90°, mirrored matrices included).
"""

from __future__ import annotations

import math
import os
import re
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.error
import numpy as np

from vidinv.errors import BackendUnavailableError
from vidinv.frame import Frame
from vidinv.video.errors import (
    DamagedVideoWarning,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UndecodableVideoError,
    UnsupportedCodecError,
    VideoError,
    VideoInputError,
)

ThreadType = Literal["AUTO", "FRAME", "SLICE", "NONE"]
Backend = Literal["pyav", "decord"]
BACKENDS: tuple[str, ...] = ("pyav", "decord")

#: The demuxers a user's file may be read with (FFmpeg names; a demuxer whose name lists several,
#: ``mov,mp4,m4a,3gp,3g2,mj2``, is allowed by any of them). Only real container formats that
#: read nothing but the file itself: no playlists (hls, dash), no ``concat``, no image2 patterns,
#: no ``tty`` text "videos". The audio-only ones are here so that a sound file is told "no video
#: stream" rather than "unknown format".
INPUT_FORMATS: tuple[str, ...] = (
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "flv", "mpegts",
    "mpeg", "ogg", "asf", "nut", "gif", "ivf", "h264", "hevc", "m4v", "yuv4mpegpipe",
    "wav", "mp3", "flac", "aac",
)
#: Where FFmpeg may read from: the named file, nothing else (no network, no ``concat:``).
INPUT_PROTOCOLS = "file"

# Magic numbers of the container families whose failure to open means "cut short".
_MP4_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video stream is, as far as the container tells before decoding it all.

    ``width``/``height`` are of the upright picture (after rotation). ``fps`` is the stream's
    average frame rate (for VFR clips the mean; the frames' own ``pts`` are the truth).
    ``frame_count`` and ``duration`` (seconds) are ``None`` where the container does not say.
    ``rotation`` is PyAV's ``frame.rotation`` (degrees the display matrix turns the picture
    counter-clockwise) and ``display_matrix`` the raw ``int32[9]`` matrix, ``None`` without one.
    """

    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction | None
    frame_count: int | None = None
    duration: float | None = None
    has_audio: bool = False
    codec: str = ""
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    path: str | None = None

    @classmethod
    def for_frames(
        cls, width: int, height: int, fps: float | Fraction, time_base: Fraction | None = None
    ) -> VideoInfo:
        """Describe frames that come from no file (a camera, images), e.g. for ``VideoWriter``.

        ``time_base`` defaults to ``1/fps`` (when fps is whole) or 1/90000.
        """
        rate = Fraction(fps).limit_denominator(1001)
        if time_base is None:
            time_base = Fraction(1, rate.numerator) if rate.denominator == 1 else Fraction(1, 90000)
        return cls(width=width, height=height, fps=rate, time_base=time_base)


# ---------------------------------------------------------------------------------------------
# orientation


def _rotation_from_matrix(matrix: tuple[int, ...]) -> float:
    """``av_display_rotation_get``: degrees the matrix turns the picture counter-clockwise."""
    a, b, c, d = (matrix[i] / 65536.0 for i in (0, 1, 3, 4))
    scale_0, scale_1 = math.hypot(a, c), math.hypot(b, d)
    if scale_0 == 0.0 or scale_1 == 0.0:
        return float("nan")
    return -math.degrees(math.atan2(b / scale_1, a / scale_0))


def _clockwise_angle(display_matrix: tuple[int, ...]) -> float | None:
    """ffmpeg's ``get_rotation()``: the clockwise display angle wrapped to [0, 360)."""
    ccw = _rotation_from_matrix(display_matrix)
    if math.isnan(ccw):
        return None
    theta = -round(ccw)
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def upright(image: np.ndarray, display_matrix: tuple[int, ...] | None) -> np.ndarray:
    """Turn a decoded picture upright the way ``ffmpeg``'s autorotate does.

    ``image`` is [H,W,C]; returns [H,W,C] or [W,H,C] (a contiguous copy when anything changed).
    Multiples of 90° (with or without a mirror) are exact; any other angle is left as it is
    (FFmpeg would resample it with the ``rotate`` filter; :func:`probe` warns about it).
    """
    if display_matrix is None:
        return image
    m = display_matrix
    theta = _clockwise_angle(m)
    if theta is None:
        return image
    if abs(theta - 90) < 1.0:
        # transpose=cclock_flip (a plain transpose) or transpose=clock
        out = image.transpose(1, 0, 2) if m[3] > 0 else np.rot90(image, -1)
    elif abs(theta - 180) < 1.0:
        out = image
        if m[0] < 0:
            out = out[:, ::-1]
        if m[4] < 0:
            out = out[::-1]
    elif abs(theta - 270) < 1.0:
        # transpose=clock_flip or transpose=cclock
        out = np.rot90(image, -1)[::-1] if m[3] < 0 else np.rot90(image, 1)
    elif abs(theta) > 1.0:
        return image
    else:
        out = image[::-1] if m[4] < 0 else image
    if out is image:
        return image
    return np.ascontiguousarray(out)


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    side_data = frame.side_data.get("DISPLAYMATRIX")
    if side_data is None:
        return None
    values = np.frombuffer(bytes(side_data), dtype=np.int32)
    if values.size != 9:
        return None
    return tuple(int(v) for v in values)


# ---------------------------------------------------------------------------------------------
# opening, with errors a user can act on


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def open_input_container(path: str | Path) -> Any:
    """``av.open`` for reading a user's file, and the only way vidinv opens one.

    The file is named as a ``file:`` URL (a name such as ``concat:a|b`` or ``http://…`` is a
    file name, not a protocol), FFmpeg may use the ``file`` protocol only and the demuxers of
    :data:`INPUT_FORMATS` only, so a playlist or concat list naming other files is refused
    before anything it names is opened. Raises what ``av.open`` raises (``FFmpegError``,
    ``OSError``); :func:`probe` and :class:`VideoReader` turn that into one line.
    """
    return av.open(
        "file:" + os.fspath(Path(path).absolute()), mode="r", metadata_errors="ignore",
        options={"protocol_whitelist": INPUT_PROTOCOLS,
                 "format_whitelist": ",".join(INPUT_FORMATS)},
    )


#: Pictures told apart by their first bytes (FFmpeg's picture demuxers are not allowed).
_PICTURE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"),
                  (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def _picture_kind(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((kind for magic, kind in _PICTURE_MAGIC if head.startswith(magic)), None)


def _not_a_video_picture(path: Path, kind: str) -> NotAVideoError:
    from vidinv.video.images import IMAGE_SUFFIXES

    advice = (
        "this command needs a video (edit and invert also take pictures and folders "
        "of pictures)"
        if path.suffix.lower() in IMAGE_SUFFIXES
        else "name it .png or .jpg (edit and invert take pictures and folders of "
        "pictures as well as videos)"
    )
    return NotAVideoError(f"{path} is an image ({kind}), not a video; {advice}")


def _explain_open_failure(path: Path, error: Exception) -> VideoInputError:
    with open(path, "rb") as f:
        head = f.read(1024)
    if (kind := _picture_kind(head)) is not None:
        return _not_a_video_picture(path, kind)
    if head[4:8] in _MP4_BOX_TYPES:
        return TruncatedVideoError(
            f"{path} is an MP4/MOV without its index (moov atom): the recording or copy stopped "
            "before it finished; re-copy or re-export the video"
        )
    if head.startswith(_MATROSKA_MAGIC):
        return TruncatedVideoError(
            f"{path} is a Matroska/WebM file whose header is damaged or cut short; re-copy or "
            "re-export the video"
        )
    if _looks_like_text(head):
        first = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if first.startswith((b"#EXTM3U", b"ffconcat")):
            return NotAVideoError(
                f"{path} is a {'playlist' if first.startswith(b'#') else 'concat list'}, not "
                "a video; vidinv reads only video files and follows no list to other files"
            )
        return NotAVideoError(f"{path} is a text file, not a video; pass a video file (.mp4, .mov)")
    if isinstance(error, av.error.ArgumentError):  # a demuxer off the list refused it
        return NotAVideoError(
            f"{path} is not a video file vidinv opens (only .mp4/.mov, .mkv/.webm, .avi, .flv, "
            ".ts/.mpg, .ogv and similar containers are read); convert it to H.264 .mp4"
        )
    reason = getattr(error, "strerror", None) or str(error)
    return NotAVideoError(
        f"{path} is not a video FFmpeg can read ({reason}); check the file or convert it to "
        "H.264 .mp4"
    )


def _open_input(path: Path) -> Any:
    """Open ``path`` with PyAV and return the container and its first video stream."""
    if not path.exists():
        raise VideoInputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise VideoInputError(
            f"{path} is a folder, not a video; pass a video file, or read the folder as images"
        )
    if path.stat().st_size == 0:
        raise EmptyVideoError(
            f"{path} is empty (0 bytes): the recording or copy did not finish; re-copy or "
            "re-export it"
        )
    try:
        container = open_input_container(path)
    except PermissionError as e:
        raise VideoInputError(f"{path}: permission denied; make the file readable") from e
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise _explain_open_failure(path, e) from e
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise NoVideoStreamError(
                f"{path} has no video stream (it holds {', '.join(kinds)}); pass a file with video"
            )
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise UnsupportedCodecError(
                f"{path}: its video codec has no decoder in this FFmpeg build; re-encode it to "
                "H.264 (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            )
    except BaseException:
        container.close()
        raise
    return container, stream


def _first_frame(container: Any, stream: Any) -> av.VideoFrame | None:
    """Decode until the first frame (skipping packets that fail); None if none decodes."""
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            if frames:
                return frames[0]
    except av.error.FFmpegError:
        pass
    return None


_DURATION_TAG = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _stream_end_seconds(container: Any, stream: Any) -> float | None:
    """When the video stream should end, from the container's own numbers (None if unknown)."""
    tb = stream.time_base
    if stream.duration is not None and tb is not None:
        start = stream.start_time or 0
        return float((start + stream.duration) * tb)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    if tag is not None and (match := _DURATION_TAG.match(tag.strip())):
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is not None and len(container.streams) == 1:
        return (container.duration + (container.start_time or 0)) / 1_000_000
    return None


def probe(path: str | Path) -> VideoInfo:
    """Open ``path``, check it is a readable video and describe it (decodes one frame)."""
    path = Path(path)
    container, stream = _open_input(path)
    try:
        first = _first_frame(container, stream)
        if first is None:
            raise UndecodableVideoError(
                f"{path}: not one video frame could be decoded (damaged or unsupported data); "
                "re-encode or re-export the video"
            )
        matrix = _display_matrix(first)
        theta = None if matrix is None else _clockwise_angle(matrix)
        if theta is not None and min(theta % 90, 90 - theta % 90) >= 1.0:
            warnings.warn(
                f"{path}: rotation of {theta:.0f} degrees is not a multiple of 90; frames are "
                "read unrotated",
                stacklevel=2,
            )
        shape = upright(np.empty((first.height, first.width, 0), np.uint8), matrix).shape
        height, width = shape[:2]
        fps = stream.average_rate or stream.guessed_rate
        tb = stream.time_base
        end = _stream_end_seconds(container, stream)
        start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        return VideoInfo(
            width=int(width),
            height=int(height),
            fps=Fraction(fps) if fps else None,
            time_base=Fraction(tb) if tb else None,
            frame_count=int(stream.frames) or None,
            duration=None if end is None else max(0.0, end - start),
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
            rotation=int(first.rotation),
            display_matrix=matrix,
            path=str(path),
        )
    finally:
        container.close()


# ---------------------------------------------------------------------------------------------
# readers


class VideoReader:
    """Iterate a video file's frames as ``Frame`` records (index, pts, time_base, RGB image).

    ``image`` is [H,W,3] uint8 RGB, upright. ``pts`` counts ``time_base`` units and is the
    frame's own presentation time (VFR is preserved); a frame the container gives no time gets
    the previous one's plus one nominal interval. Each iteration opens the file afresh and
    closes it when the iteration ends or is abandoned; at most a few frames (the decoder's
    delay) are in memory at a time.

    ``thread_type`` is PyAV's decoder threading (``"AUTO"``: frame and slice threads);
    ``threads`` their number (0: FFmpeg's choice, 1: decode in the iterating thread).
    Raises a ``VideoInputError`` subclass (one line, with the fix) on construction if the file
    cannot be read; a damaged end warns with ``DamagedVideoWarning`` after the last good frame.
    """

    backend = "pyav"

    def __init__(self, path: str | Path, *, thread_type: ThreadType = "AUTO",
                 threads: int = 0) -> None:
        self.path = Path(path)
        self.thread_type: ThreadType = "NONE" if threads == 1 else thread_type
        self.threads = threads
        self.info = probe(self.path)

    def __repr__(self) -> str:
        i = self.info
        return f"VideoReader({str(self.path)!r}, {i.width}x{i.height}, {i.fps} fps, {i.codec})"

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        container, stream = _open_input(self.path)
        try:
            stream.thread_type = self.thread_type
            if self.threads > 1:
                stream.codec_context.thread_count = self.threads
            time_base = Fraction(stream.time_base) if stream.time_base else None
            nominal_step = _nominal_step(self.info.fps, time_base)
            matrix = self.info.display_matrix
            index = 0
            last_pts: int | None = None
            bad_packets = 0
            demux_error: Exception | None = None
            flushed = False

            def to_frame(av_frame: av.VideoFrame) -> Frame:
                nonlocal index, last_pts
                pts = av_frame.pts
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + nominal_step
                # one thread: FFmpeg's default (threads=0) starts and stops a pool of one thread
                # per core for every frame's conversion (2 thread starts per frame here)
                image = upright(av_frame.to_ndarray(format="rgb24", threads=1), matrix)
                frame = Frame(index=index, image=image, pts=pts, time_base=time_base)
                index += 1
                last_pts = pts
                return frame

            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    demux_error = e
                    break
                if packet.size == 0:
                    flushed = True
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    bad_packets += 1
                    continue
                for av_frame in decoded:
                    yield to_frame(av_frame)
            if not flushed:
                try:
                    for av_frame in stream.decode(None):
                        yield to_frame(av_frame)
                except av.error.FFmpegError:
                    bad_packets += 1

            if index == 0:
                raise UndecodableVideoError(
                    f"{self.path}: not one video frame could be decoded; re-encode or re-export it"
                )
            start = stream.start_time or 0
            problem = _damage_report(
                self.info, index, last_pts, start, time_base, nominal_step, bad_packets, demux_error
            )
            if problem:
                warnings.warn(
                    f"{self.path}: {problem}; kept the {index} frames that decoded",
                    DamagedVideoWarning,
                    stacklevel=2,
                )
        finally:
            container.close()


def _nominal_step(fps: Fraction | None, time_base: Fraction | None) -> int:
    """One frame interval in ``time_base`` units (at least 1)."""
    if not fps or not time_base:
        return 1
    return max(1, round(1 / (fps * time_base)))


def _damage_report(
    info: VideoInfo,
    decoded: int,
    last_pts: int | None,
    start_pts: int,
    time_base: Fraction | None,
    step: int,
    bad_packets: int,
    demux_error: Exception | None,
) -> str:
    """Why the decoded frames look like less than the whole video ('' if they do not)."""
    if demux_error is not None:
        return f"reading stopped early ({getattr(demux_error, 'strerror', None) or demux_error})"
    if bad_packets:
        return f"{bad_packets} packet(s) could not be decoded (damaged data)"
    if info.duration is not None and last_pts is not None and time_base is not None:
        interval = float(step * time_base)
        decoded_end = float((last_pts - start_pts) * time_base) + interval
        expected_end = info.duration
        if decoded_end < expected_end - max(2.5 * interval, 0.1) and (
            info.frame_count is None or decoded < info.frame_count
        ):
            return (
                f"the video stops at {decoded_end:.2f} s of {expected_end:.2f} s "
                "(the file is cut short)"
            )
    return ""


def _pin_file(path: Path, owner: object) -> Path:
    """A name for the file ``path`` names now, that keeps naming it while ``owner`` lives.

    On Linux, ``/proc/self/fd/N`` of a descriptor opened here (closed when ``owner`` is
    collected): a file renamed over ``path`` later is not what gets read. Elsewhere, ``path``.
    """
    if not Path("/proc/self/fd").is_dir():
        return path
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise VideoInputError(f"{path}: cannot be opened ({e.strerror}); check the path") from e
    weakref.finalize(owner, os.close, descriptor)
    return Path(f"/proc/self/fd/{descriptor}")


class DecordReader:
    """The ``VideoReader`` interface on decord (``pip install decord``), imported when built.

    ``pts`` are decord's frame start times converted to the stream's ``time_base``. Videos with
    rotation metadata are refused (``BackendUnavailableError``): decord 0.6 transposes them
    itself and returns mis-shaped, garbled frames (4 channels, wrong layout); use the PyAV
    reader for those.
    """

    backend = "decord"

    def __init__(self, path: str | Path, *, num_threads: int = 0) -> None:
        try:
            import decord  # noqa: F401  (optional backend)
        except ImportError as e:
            raise BackendUnavailableError(
                "the decord video backend is not installed; pip install decord, or use the "
                "pyav backend"
            ) from e
        self.path = Path(path)
        self.num_threads = num_threads
        probe(self.path)  # the user's errors, named by the user's path
        self._source = _pin_file(self.path, self)
        # What decord reads is what was checked: the same open file, probed again (the file
        # protocol and container whitelist), however the path changes meanwhile.
        self.info = probe(self._source)
        if self.info.display_matrix is not None:
            raise BackendUnavailableError(
                f"decord cannot read {self.path.name} correctly (it has rotation metadata, "
                f"{self.info.rotation} degrees); use the pyav backend"
            )

    def __repr__(self) -> str:
        i = self.info
        return f"DecordReader({str(self.path)!r}, {i.width}x{i.height}, {i.fps} fps, {i.codec})"

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        import decord

        try:
            reader = decord.VideoReader(
                str(self._source), ctx=decord.cpu(0), num_threads=self.num_threads
            )
        except decord.DECORDError as e:
            raise UndecodableVideoError(
                f"{self.path}: decord cannot read this video ({str(e).splitlines()[0]}); use "
                "the pyav backend"
            ) from e
        time_base = self.info.time_base or Fraction(1, 1_000_000)
        for index in range(len(reader)):
            start_seconds = float(reader.get_frame_timestamp(index)[0])
            image = reader.next().asnumpy()
            pts = round(Fraction(start_seconds) / time_base)
            yield Frame(index=index, image=image, pts=pts, time_base=time_base)


def open_video(
    path: str | Path, backend: Backend = "pyav", **options: Any
) -> VideoReader | DecordReader:
    """Open a video with the named backend (``"pyav"``, the default, or ``"decord"``)."""
    if backend == "pyav":
        return VideoReader(path, **options)
    if backend == "decord":
        return DecordReader(path, **options)
    raise VideoError(f"unknown video backend {backend!r}; use one of: {', '.join(BACKENDS)}")
