"""Write ``Frame`` records to an H.264 video with PyAV, keeping their timestamps and the audio.

``VideoWriter`` encodes with libx264 (yuv420p, user-set ``crf``/``preset``) at the input's frame
rate and, more to the point, at the input frames' own ``pts`` (rescaled to the writer's time base
if a frame brings another one), so variable frame rate survives a read → edit → write round trip.
The audio stream of ``audio_from`` (usually the input video) is copied packet by packet, not
re-encoded, and interleaved with the video by time.

The output is written to a hidden temporary file in the destination folder and renamed over
the destination (``os.replace``) only when the ``with`` block ends without an exception; on an
exception, ``KeyboardInterrupt`` included, the temporary file is deleted. A failed or interrupted
run therefore never leaves a file that looks complete.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np

from vidinv.frame import Frame
from vidinv.io_safety import FinishedOrAbandoned, put_in_place
from vidinv.video.errors import VideoWriteError
from vidinv.video.reader import VideoInfo, open_input_container

log = logging.getLogger(__name__)

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_FASTSTART_SUFFIXES = (".mp4", ".m4v", ".mov")


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 RGB -> [3·H'/2, W'] uint8 I420 planes (Y, then U, then V; H', W' = the
    sides padded to even), BT.601 limited range as FFmpeg's swscale converts by default.

    OpenCV converts without the GIL (the stage threads go on meanwhile) and faster than PyAV's
    ``reformat``, which holds the GIL for the whole conversion (time in which no other stage's
    Python can run). The chroma is the mean of each 2×2 block, where
    swscale filters otherwise: luma within 1 level, chroma within a few at sharp colour edges.
    """
    return cv2.cvtColor(np.ascontiguousarray(_pad_to_even(image)), cv2.COLOR_RGB2YUV_I420)


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """[H,W,3] → [H + H%2, W + W%2, 3]: repeat the last row/column where a side is odd."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


class VideoWriter(FinishedOrAbandoned):
    """H.264 writer for ``Frame`` records; use it as a context manager.

    Args:
        path: the output file; its suffix picks the container (``.mp4``, ``.mov``, ``.mkv``).
        like: the input's ``VideoInfo`` (``VideoInfo.for_frames`` for frames from no file):
            frame size, frame rate and time base of the output.
        crf: x264 constant rate factor, 0 (lossless) – 51; 18 is visually lossless.
        preset: x264 speed/size trade-off, ``ultrafast`` … ``placebo``.
        audio_from: a file whose first audio stream is copied unchanged into the output
            (``None``, or a file without audio: no audio).
        threads: x264's threads (0: its own choice, about 1.5 per core; 1: encode in the
            calling thread).

    Frames must be ``like.width × like.height`` [H,W,3] uint8 RGB. yuv420p needs even sides,
    so an odd width or height is **padded** by one pixel, repeating the last column or row:
    nothing of the picture is cropped, and the output is then 1 px wider/taller than ``like``.

    Timing: a frame's ``pts`` is taken in its ``time_base`` and rescaled to the writer's
    (``like.time_base``); a frame without ``pts`` (images) is placed one nominal interval after
    the previous one. Timestamps must increase; one that does not is moved just after the
    previous frame (logged once).

    All audio packets of ``audio_from`` are copied (like ``ffmpeg -c:a copy`` without
    ``-shortest``), each muxed before the first video packet that starts after it.
    """

    def __init__(
        self,
        path: str | Path,
        like: VideoInfo,
        *,
        crf: int = 18,
        preset: str = "medium",
        audio_from: str | Path | None = None,
        threads: int = 0,
    ) -> None:
        if not 0 <= crf <= 51:
            raise VideoWriteError(f"crf must be between 0 and 51 (got {crf}); 18 is a good default")
        if preset not in X264_PRESETS:
            raise VideoWriteError(
                f"unknown x264 preset {preset!r}; use one of: {', '.join(X264_PRESETS)}"
            )
        if like.width <= 0 or like.height <= 0:
            raise VideoWriteError(f"cannot write {like.width}x{like.height} frames")
        self.path = Path(path)
        self.like = like
        self.crf = crf
        self.preset = preset
        self.threads = int(threads)
        self.audio_from = None if audio_from is None else Path(audio_from)
        self.fps = Fraction(like.fps) if like.fps else Fraction(30)
        self.time_base = Fraction(like.time_base) if like.time_base else Fraction(1, 90000)
        self.width = like.width + like.width % 2
        self.height = like.height + like.height % 2
        self.frames_written = 0
        self.audio_packets_written = 0
        self._tmp_path: str | None = None
        self._cleanup: weakref.finalize | None = None
        self._container: Any = None
        self._video: Any = None
        self._audio_in: Any = None
        self._audio_out: Any = None
        self._audio_packets: Any = None
        self._next_audio: Any = None
        self._last_pts: int | None = None
        self._warned_pts = False
        # Added to every timestamp so that nothing starts before 0 (a clip cut with
        # `-ss … -c copy` often starts at a negative pts, which MP4 players and decoders drop).
        self._shift_seconds: Fraction | None = None
        self._shift_video = 0

    def __repr__(self) -> str:
        return (
            f"VideoWriter({str(self.path)!r}, {self.width}x{self.height}, {self.fps} fps, "
            f"crf={self.crf}, preset={self.preset!r})"
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._container is not None

    def open(self) -> None:
        """Create the temporary output and its streams (``__enter__`` calls this)."""
        if self.is_open:
            raise RuntimeError("VideoWriter is already open")
        folder = self.path.parent
        if not folder.is_dir():
            raise VideoWriteError(f"output folder {folder} does not exist; create it first")
        tmp = folder / f".{self.path.stem}.{secrets.token_hex(4)}.partial{self.path.suffix}"
        # O_EXCL: never clobber; mode 0o666 so the umask applies as for any new file.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._tmp_path = str(tmp)
        self._cleanup = weakref.finalize(self, _remove_quietly, self._tmp_path)
        try:
            self._open_container()
        except BaseException:
            self.abort()
            raise

    def _open_container(self) -> None:
        options = (
            {"movflags": "+faststart"} if self.path.suffix.lower() in _FASTSTART_SUFFIXES else {}
        )
        try:
            self._container = av.open(self._tmp_path, mode="w", options=options)
        except ValueError as e:
            raise VideoWriteError(
                f"cannot tell the video format from {self.path.name!r}; name the output .mp4, "
                ".mov or .mkv"
            ) from e
        video = self._container.add_stream(
            "libx264", rate=self.fps, options={"crf": str(self.crf), "preset": self.preset,
                                               **({"threads": str(self.threads)}
                                                  if self.threads else {})}
        )
        video.width, video.height = self.width, self.height
        video.pix_fmt = "yuv420p"
        video.time_base = self.time_base
        video.codec_context.time_base = self.time_base
        self._video = video
        if self.audio_from is not None:
            self._open_audio(self.audio_from)

    def _open_audio(self, source: Path) -> None:
        try:
            audio_in = open_input_container(source)
        except (OSError, av.error.FFmpegError) as e:
            raise VideoWriteError(
                f"cannot read the audio of {source} ({e}); pass another audio source or none"
            ) from e
        if not audio_in.streams.audio:
            audio_in.close()
            log.debug("%s has no audio stream; writing video only", source)
            return
        self._audio_in = audio_in
        template = audio_in.streams.audio[0]
        try:
            self._audio_out = self._container.add_stream_from_template(template)
        except ValueError as e:
            codec = template.codec_context.name if template.codec_context else "unknown"
            raise VideoWriteError(
                f"{self.path.suffix or 'this'} files cannot hold {codec} audio; write to .mkv "
                "instead, or drop the audio"
            ) from e
        self._audio_packets = (
            p for p in audio_in.demux(template) if p.size > 0 and p.dts is not None
        )
        self._next_audio = next(self._audio_packets, None)

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, and move the file into place."""
        if not self.is_open:
            return
        try:
            if self.frames_written == 0:
                raise VideoWriteError(f"no frames reached {self.path}; nothing was written")
            for packet in self._video.encode(None):
                self._mux_video(packet)
            self._mux_audio_until(None)
            self._container.close()
            self._container = None
            self._close_audio_input()
            self._verify_written()
            put_in_place(self._tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        if self._cleanup is not None:
            self._cleanup.detach()
        self._tmp_path = None

    def _verify_written(self) -> None:
        """Read the finished temporary file back: it must hold a packet of data for every frame
        written. The container's packets, not the pictures: decoding them again cost a fifth
        of the encode, and what can go wrong here is the file, not the encoder's bitstream."""
        assert self._tmp_path is not None
        packets = 0
        try:
            with av.open(self._tmp_path, mode="r") as container:
                for packet in container.demux(container.streams.video[0]):
                    if packet.size == 0 or packet.dts is None:
                        continue  # the demuxer's end-of-stream marker
                    if packet.pts is not None and packet.pts < 0:
                        break
                    bytes(packet)  # the payload is there, not beyond a cut file's end
                    packets += 1
        except (OSError, av.error.FFmpegError, IndexError) as error:
            raise VideoWriteError(f"{self.path}: the written video cannot be read back ({error}); "
                                  "nothing was written, try another container (.mkv)") from None
        if packets != self.frames_written:
            raise VideoWriteError(f"{self.path}: only {packets} of {self.frames_written} written "
                                  "frames read back; nothing was written, try another "
                                  "container (.mkv)")

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the destination is left untouched."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                log.debug("error while closing an aborted output", exc_info=True)
            self._container = None
        self._close_audio_input()
        if self._tmp_path is not None:
            _remove_quietly(self._tmp_path)
            self._tmp_path = None
        if self._cleanup is not None:
            self._cleanup.detach()

    def _close_audio_input(self) -> None:
        if self._audio_in is not None:
            self._audio_packets = None
            self._audio_in.close()
            self._audio_in = None

    # -- writing ---------------------------------------------------------------------------

    def write(self, frame: Frame) -> None:
        """Encode one frame ([H,W,3] uint8 RGB of ``like``'s size) at its own timestamp."""
        if not self.is_open:
            raise RuntimeError("VideoWriter is not open; use it as `with VideoWriter(...) as w:`")
        image = frame.image
        expected = (self.like.height, self.like.width, 3)
        if image.shape != expected or image.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.index} is {image.shape} {image.dtype}; this writer takes "
                f"{expected} uint8 RGB"
            )
        av_frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format="yuv420p")
        av_frame.pts = self._pts_for(frame)
        av_frame.time_base = self.time_base
        for packet in self._video.encode(av_frame):
            self._mux_video(packet)
        self.frames_written += 1

    def _pts_for(self, frame: Frame) -> int:
        step = max(1, round(1 / (self.fps * self.time_base)))
        if frame.pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
        elif frame.time_base is None or frame.time_base == self.time_base:
            pts = int(frame.pts)
        else:
            pts = round(frame.pts * frame.time_base / self.time_base)
        if frame.pts is not None:
            pts += self._video_shift(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            if not self._warned_pts:
                log.warning(
                    "%s: frame %d has a timestamp that does not increase (%d after %d); "
                    "moving it just after the previous frame",
                    self.path,
                    frame.index,
                    pts,
                    self._last_pts,
                )
                self._warned_pts = True
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _video_shift(self, first_pts: int) -> int:
        """Ticks added to every video pts: set at the first frame so that the video does not
        start before 0; the copied audio moves by the same time, keeping sync (its own small
        negative start, e.g. AAC priming, is the container's business and is kept)."""
        if self._shift_seconds is None:
            start = Fraction(first_pts) * self.time_base
            if start < 0:
                self._shift_video = math.ceil(-start / self.time_base)
                self._shift_seconds = self._shift_video * self.time_base
                log.info("%s: the input starts at %.3f s; timestamps shifted to start at 0",
                         self.path, float(start))
            else:
                self._shift_seconds = Fraction(0)
        return self._shift_video

    def _mux_video(self, packet: Any) -> None:
        if packet.dts is not None and packet.time_base is not None:
            self._mux_audio_until(float(packet.dts * packet.time_base))
        self._container.mux(packet)

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets whose decode time is at most ``seconds`` (all when None)."""
        while self._next_audio is not None:
            packet = self._next_audio
            shift = float(self._shift_seconds or 0)
            if seconds is not None and float(packet.dts * packet.time_base) + shift > seconds:
                return
            if self._shift_seconds:
                ticks = round(self._shift_seconds / packet.time_base)
                if packet.pts is not None:
                    packet.pts += ticks
                packet.dts += ticks
            packet.stream = self._audio_out
            self._container.mux(packet)
            self.audio_packets_written += 1
            self._next_audio = next(self._audio_packets, None)
