"""The streaming pipeline and the edit / invert / live commands, on a tiny random model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import audio_packet_hashes, make_audio_only, make_video, real_clip_path
from tests.model_fixtures import make_tiny_model
from vidinv.config import ConfigError, PipelineConfig, load_preset
from vidinv.frame import Frame
from vidinv.pipeline.runner import run_threaded

# --- runner --------------------------------------------------------------------------------


class _Slow:
    """A stage that sleeps per frame and records the frames it has seen."""

    latency = 0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.seen = 0

    def __call__(self, frames):
        for frame in frames:
            time.sleep(self.seconds)
            self.seen += 1
            yield frame


class _Fails:
    latency = 0

    def __call__(self, frames):
        for frame in frames:
            if frame.index == 5:
                raise RuntimeError("stage broke")
            yield frame


def _frames(n: int):
    for index in range(n):
        yield Frame(index=index, image=np.zeros((2, 2, 3), np.uint8))


def test_runner_keeps_order_and_bounds_the_backlog():
    produced = []

    def source():
        for frame in _frames(60):
            produced.append(frame.index)
            yield frame

    out = []
    backlog = []
    stats = run_threaded(source(), [[_Slow(0)], [_Slow(0.0005)]],
                         lambda f: (out.append(f.index), backlog.append(len(produced) - len(out)),
                                    time.sleep(0.002)), queue_size=2)
    assert out == list(range(60)) and stats.frames == 60
    # source, two segments and three queues of 2: at most ~9 frames can be in flight
    assert max(backlog) <= 10


@pytest.mark.parametrize("handoff", [False, True])
def test_runner_handoff_pulls_a_live_frame_only_when_it_can_go_on(handoff):
    """While the last stage holds frame k, a hand-off run has pulled at most k+2 from a live
    source (one frame in each segment's hands); without hand-off every queue fills as well, and
    those frames would be shown late. Counted, not timed: the last stage waits for the others
    to run ahead as far as they can."""
    pulled = []
    far_ahead = threading.Event()

    def camera():  # a live source: the first segment reads it directly
        for frame in _frames(20):
            pulled.append(frame.index)
            if len(pulled) >= 5:
                far_ahead.set()
            yield frame

    shown, ahead = [], []

    def show(frame):
        if frame.index == 0:  # without hand-off 4 more are pulled; with it they cannot be
            far_ahead.wait(timeout=0.5 if handoff else 30)
        shown.append(frame.index)
        ahead.append(len(pulled) - 1 - frame.index)

    run_threaded(camera(), [[_Slow(0)], [_Slow(0)]], show, queue_size=1,
                 source_thread=False, handoff=handoff)
    assert shown == list(range(20))
    if handoff:
        assert max(ahead) <= 2
    else:
        assert ahead[0] >= 4


def test_runner_reraises_a_stage_error_and_stops_every_thread():
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="stage broke"):
        run_threaded(_frames(1000), [[_Fails()]], lambda f: None)
    time.sleep(0.3)
    assert threading.active_count() <= before


# --- config --------------------------------------------------------------------------------


def test_presets_and_overrides():
    realtime = load_preset("realtime")
    assert realtime.latent.smoothing == "causal" and realtime.engine.batch_size == 1
    config = PipelineConfig().with_overrides(["latent.sigma=2.5", "output.side_by_side=yes"])
    assert config.latent.sigma == 2.5 and config.output.side_by_side is True
    with pytest.raises(ConfigError, match=r"\[latent\] has smoothing"):
        PipelineConfig().with_overrides(["latent.sigmaa=1"])
    with pytest.raises(ConfigError, match="is not a whole number"):
        PipelineConfig().with_overrides(["engine.batch_size=two"])
    with pytest.raises(ConfigError, match="is not true or false"):
        PipelineConfig().with_overrides(["output.side_by_side=maybe"])
    with pytest.raises(ConfigError, match="known presets"):
        load_preset("nope")


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def talking_head(tmp_path_factory) -> Path:
    """The first 36 frames of the real clip, with a sine audio track."""
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    folder = tmp_path_factory.mktemp("clip")
    audio = make_audio_only(folder / "tone.m4a", seconds=1.2)
    reader = VideoReader(real_clip_path())
    path = folder / "talk.mp4"
    with VideoWriter(path, reader.info, crf=12, preset="ultrafast", audio_from=audio) as writer:
        for frame in reader:
            if frame.index >= 36:
                break
            writer.write(frame)
    return path


def _video_facts(path: Path) -> tuple[int, float, list]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(frame.pts * frame.time_base) for frame in container.decode(stream)]
    return len(times), times[-1] - times[0], times


def test_edit_keeps_frame_count_timing_and_audio(tmp_path, model, talking_head):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    out = tmp_path / "edited.mp4"
    config = PipelineConfig().with_overrides(["engine.batch_size=3"])
    stats = process_video(talking_head, out, bundle, config,
                          resolve_editor(bundle, "smile", 2.0), progress=False)
    assert stats.frames == 36
    count_in, duration_in, times_in = _video_facts(talking_head)
    count_out, duration_out, times_out = _video_facts(out)
    assert count_out == count_in == 36
    assert np.allclose(times_out, times_in, atol=1e-3)
    assert audio_packet_hashes(out) == audio_packet_hashes(talking_head)


def test_strength_zero_without_smoothing_equals_invert(model, talking_head, tmp_path):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    # every frame rendered (key frames would leave the carried frames unrendered)
    config = PipelineConfig().with_overrides(["face.crop_smoothing=none",
                                              "latent.smoothing=none", "face.key_frames=false"])
    faces: dict[str, list[np.ndarray]] = {"edit": [], "invert": []}
    for name, editor in (("edit", resolve_editor(bundle, "smile", 0.0)), ("invert", None)):
        process_video(talking_head, tmp_path / f"{name}.mp4", bundle, config, editor,
                      progress=False, on_frame=lambda f, n=name: faces[n].append(f.rendered))
    assert len(faces["edit"]) == 36
    assert all(np.array_equal(a, b) for a, b in zip(faces["edit"], faces["invert"], strict=True))
    moved = []
    process_video(talking_head, tmp_path / "moved.mp4", bundle, config,
                  resolve_editor(bundle, "smile", 3.0), progress=False,
                  on_frame=lambda f: moved.append(f.rendered))
    assert not np.array_equal(moved[10], faces["invert"][10])


def test_invert_saves_codes(model, talking_head, tmp_path):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.clip import invert_video

    bundle = load_model_bundle(model)
    latents = tmp_path / "codes.npz"
    invert_video(talking_head, tmp_path / "inv.mp4", bundle, PipelineConfig(),
                 latents_path=latents, progress=False)
    codes = np.load(latents)
    assert list(codes["frames"]) == list(range(36))
    assert codes["w_000000"].shape == (bundle.generator.n_latent, 512)
    assert codes["features_000035"].shape == (16, 16, 16)


def test_live_from_a_file_camera_drops_the_oldest_frames_and_keeps_order(
        model, talking_head, tmp_path):
    """A consumer far slower than the camera: the source drops frames rather than queue them
    (gaps in the captured indices the consumer sees), what is shown stays in capture order, and
    the recording holds exactly the frames shown. How fast frames arrive is for
    ``benchmarks/live.py`` to measure, not for a test."""
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.live import live
    from vidinv.video.sources import FileCameraSource

    bundle = load_model_bundle(model)
    source = FileCameraSource(talking_head, loop=True)
    out = tmp_path / "live.mp4"
    shown: list[int] = []

    def slow_consumer(frame: Frame) -> None:  # 120 ms per frame: ~4× slower than the camera
        shown.append(frame.index)
        time.sleep(0.12)

    report = live(source, bundle, load_preset("realtime"),
                  {"smile": resolve_editor(bundle, "smile", 1.0)}, output_path=out,
                  max_seconds=3.0, show=False, on_frame=slow_consumer)
    assert report.frames_shown == len(shown) >= 3
    assert shown == sorted(set(shown))  # capture order, no frame twice
    assert report.frames_dropped > 0
    skipped = shown[-1] + 1 - len(shown)  # captured before the last shown, never shown
    assert 0 < skipped <= report.frames_dropped
    assert _video_facts(out)[0] == report.frames_shown


# --- the command line ----------------------------------------------------------------------


def _vidinv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidinv.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("vidinv: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_cli_edit_and_its_user_errors(tmp_path, model, talking_head):
    out = tmp_path / "cli.mp4"
    result = _vidinv("edit", str(talking_head), "--attr", "smile", "-o", str(out),
                     "--model", str(model), "--quiet", "--smooth", "causal")
    assert result.returncode == 0, result.stderr
    assert _video_facts(out)[0] == 36

    listing = _vidinv("edit", "--list-attrs", "--model", str(model))
    assert "attributes: smile" in listing.stdout

    unknown = _error_line(_vidinv("edit", str(talking_head), "--attr", "frown",
                                  "--model", str(model), "-o", str(tmp_path / "x.mp4")))
    assert "frown" in unknown and "smile" in unknown
    missing = _error_line(_vidinv("edit", str(tmp_path / "none.mp4"), "--attr", "smile",
                                  "--model", str(model)))
    assert "none.mp4" in missing
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    _error_line(_vidinv("edit", str(corrupt), "--attr", "smile", "--model", str(model)))
    no_model = _error_line(_vidinv("edit", str(talking_head), "--attr", "smile",
                                   "--model", str(tmp_path / "nomodel")))
    assert "model folder" in no_model

    faceless = make_video(tmp_path / "pattern.mp4", n_frames=12, size=(96, 80)).path
    no_face_out = tmp_path / "noface_out.mp4"
    no_face = _error_line(_vidinv("edit", str(faceless), "--attr", "smile", "--model",
                                  str(model), "-o", str(no_face_out)))
    assert "no face" in no_face
    assert not no_face_out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".noface_out")]
