"""Decode one frame of a video by its index, from the keyframe before it.

:class:`VideoReader` numbers frames in the order it decodes them from the start. To show frame
``k`` without decoding the ``k`` frames before it, :func:`index_frames` demuxes the file once
(packets only, nothing decoded) and keeps every frame's ``pts`` in presentation order and the
keyframes' ``pts``; :func:`read_frame` seeks to the last keyframe at or before frame ``k``'s
``pts`` and decodes from there until the frame with that ``pts``: at most one group of
pictures (plus the decoder's delay) is decoded. Where the index cannot be trusted (a packet
without a timestamp, duplicate timestamps, a count that differs from the container's), or
the seek does not land where it should, :func:`read_frame` decodes from the start instead, as
:class:`VideoReader` does: the answer is the same frame either way.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av.error

from vidinv.frame import Frame
from vidinv.video.reader import VideoReader, _open_input, upright


@dataclass(frozen=True)
class FrameIndex:
    """Where a video's frames are: ``pts`` of every frame in presentation order (frame ``k``
    has ``pts[k]``), ``keyframes`` the sorted ``pts`` of its keyframes; ``None`` fields when
    the file's timestamps cannot be used to seek."""

    pts: tuple[int, ...] | None
    keyframes: tuple[int, ...] | None

    @property
    def seekable(self) -> bool:
        return bool(self.pts) and bool(self.keyframes)


def index_frames(path: str | Path) -> FrameIndex:
    """Demux ``path``'s video stream (no decoding) into a :class:`FrameIndex`."""
    container, stream = _open_input(Path(path))
    pts: list[int] = []
    keyframes: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return FrameIndex(None, None)
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.error.FFmpegError:
        return FrameIndex(None, None)
    finally:
        container.close()
    ordered = tuple(sorted(pts))
    if len(set(ordered)) != len(ordered):
        return FrameIndex(None, None)
    return FrameIndex(ordered, tuple(sorted(keyframes)))


@dataclass
class FrameRead:
    """A frame read by :func:`read_frame` and how many frames were decoded to reach it."""

    frame: Frame | None
    decoded: int
    seeked: bool


def read_frame(reader: VideoReader, index: int, frames: FrameIndex | None = None) -> FrameRead:
    """Frame ``index`` of ``reader``'s video (the frame ``VideoReader`` numbers ``index``;
    ``frame`` None if the video ends before it), from the keyframe before it when ``frames``
    (:func:`index_frames`) allows."""
    if frames is not None and frames.seekable and 0 <= index < len(frames.pts) \
            and len(frames.pts) == (reader.info.frame_count or len(frames.pts)):
        read = _seek_and_decode(reader, index, frames)
        if read is not None:
            return read
    decoded = 0
    found = None
    for frame in itertools.islice(iter(reader), index + 1):
        decoded += 1
        found = frame if frame.index == index else None
    return FrameRead(found, decoded, seeked=False)


def _seek_and_decode(reader: VideoReader, index: int, frames: FrameIndex) -> FrameRead | None:
    target = frames.pts[index]
    keyframe = max((k for k in frames.keyframes if k <= target), default=None)
    if keyframe is None:
        return None
    container, stream = _open_input(reader.path)
    try:
        stream.thread_type = "NONE"
        container.seek(keyframe, stream=stream, backward=True, any_frame=False)
        time_base = Fraction(stream.time_base) if stream.time_base else None
        decoded = 0
        for packet in container.demux(stream):
            try:
                decoded_frames = packet.decode()
            except av.error.FFmpegError:
                return None
            for av_frame in decoded_frames:
                decoded += 1
                if av_frame.pts is None or av_frame.pts > target:
                    return None  # the seek landed after the frame: decode from the start
                if av_frame.pts == target:
                    image = upright(av_frame.to_ndarray(format="rgb24", threads=1),
                                    reader.info.display_matrix)
                    return FrameRead(Frame(index=index, image=image, pts=target,
                                           time_base=time_base), decoded, seeked=True)
        return None
    except av.error.FFmpegError:
        return None
    finally:
        container.close()
