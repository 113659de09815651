"""Reading one frame by index from the keyframe before it (vidinv.video.seek)."""

from __future__ import annotations

import av
import numpy as np

from tests.media import pattern_frame, real_clip_path
from vidinv.video.reader import VideoReader
from vidinv.video.seek import index_frames, read_frame


def _gop_clip(path, n_frames: int = 60, gop: int = 8):
    """An H.264 clip of numbered pattern frames with a keyframe every ``gop`` frames and
    B-frames (presentation order differs from decoding order)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"bf": "2", "crf": "10", "sc_threshold": "0"}
        for index in range(n_frames):
            picture = av.VideoFrame.from_ndarray(pattern_frame(index, (64, 48)), format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_frame_read_from_its_keyframe_is_the_readers_frame(tmp_path):
    path = _gop_clip(tmp_path / "gop.mp4")
    reader = VideoReader(path)
    frames = index_frames(path)
    assert frames.seekable and len(frames.pts) == 60 and len(frames.keyframes) >= 7
    decoded_in_order = [frame.image for frame in reader]
    for index in (0, 5, 17, 33, 59):
        read = read_frame(reader, index, frames)
        assert read.seeked and read.frame.index == index
        assert np.array_equal(read.frame.image, decoded_in_order[index]), index
        assert read.decoded <= 8 + 4  # one group of pictures and the decoder's delay, not index
    # without an index: decoded from the start, the same frame
    read = read_frame(reader, 33)
    assert not read.seeked and read.decoded == 34
    assert np.array_equal(read.frame.image, decoded_in_order[33])
    assert read_frame(reader, 60, frames).frame is None  # past the end


def test_the_real_clip_has_one_keyframe_and_still_gives_the_right_frame():
    path = real_clip_path()
    reader = VideoReader(path)
    frames = index_frames(path)
    read = read_frame(reader, 100, frames)
    expected = next(frame for frame in reader if frame.index == 100)
    assert read.frame.index == 100 and np.array_equal(read.frame.image, expected.image)
    assert read.decoded == 101  # its only keyframe is frame 0
