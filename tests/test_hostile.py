"""Hostile and awkward inputs (issue 10): one test group per class of failure.

1. data loss: nothing a command writes may be something it reads, or another output;
2. broken outputs: negative start timestamps, absurd strengths and directions, non-videos;
3. failed or killed runs leave no files (SIGTERM/SIGHUP like Ctrl-C);
4. small files that would cost gigabytes are refused before they do;
5. the restricted unpickler itself (BUILD, direct ndarray calls) and download schemes;
6. one line instead of a traceback for every user-caused failure;
7. the right advice (legacy torch files, TorchScript, pictures as input).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.media import pattern_frame, real_clip_path
from tests.model_fixtures import make_tiny_model
from tests.rosinality_reference import random_rosinality_state
from vidinv.cli import main
from vidinv.config import ConfigError, PipelineConfig
from vidinv.errors import CheckpointError, DownloadError, UnsafePickleError
from vidinv.io_safety import PathConflictError, check_paths
from vidinv.latent.errors import DirectionError, StrengthError

# --- shared media and models -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_vidinv_log_handler():
    """``main`` adds its stderr handler once per process; bind it to this test's stderr."""
    logger = logging.getLogger("vidinv")
    saved = list(logger.handlers)
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _real_frames(n: int) -> list:
    from vidinv.video.reader import VideoReader

    frames = []
    for frame in VideoReader(real_clip_path()):
        if frame.index >= n:
            break
        frames.append(frame)
    return frames


def _write_clip(path: Path, images: list[np.ndarray], first_pts: int = 0,
                fps: int = 25, options: dict | None = None) -> Path:
    """H.264 clip of ``images`` at 1/fps time base, pts first_pts, first_pts+1, …"""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, fps)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 10 frames of the real clip (a face) as a short .mp4."""
    folder = tmp_path_factory.mktemp("clip")
    return _write_clip(folder / "talk.mp4", [f.image for f in _real_frames(10)])


def _decoded(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(container.streams.video[0])]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vidinv: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# === 1. data loss ==============================================================================


def test_check_paths_sees_one_file_by_any_spelling_symlink_or_hard_link(tmp_path, monkeypatch):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"precious")
    (tmp_path / "sub").mkdir()
    os.symlink(source, tmp_path / "alias.mp4")
    os.link(source, tmp_path / "hard.mp4")
    monkeypatch.chdir(tmp_path)
    for spelling in ("in.mp4", "./sub/../in.mp4", str(source), "alias.mp4", "hard.mp4"):
        with pytest.raises(PathConflictError, match="same file as the input"):
            check_paths([("input", "in.mp4")], [("-o", spelling)])
    with pytest.raises(PathConflictError, match="are the same file"):
        check_paths([("input", source)], [("-o", "out.mp4"), ("--latents", "./sub/../out.mp4")])
    # A written folder that is a read file, and a model folder's files, are protected too.
    with pytest.raises(PathConflictError):
        check_paths([("input", source)], [], [("--out", "hard.mp4")])
    model = tmp_path / "m"
    (model / "directions").mkdir(parents=True)
    (model / "directions" / "smile.safetensors").write_bytes(b"x")
    with pytest.raises(PathConflictError, match="--model file"):
        check_paths([("--model", model)], [("-o", model / "directions" / "smile.safetensors")])
    check_paths([("input", source)], [("-o", "new.mp4"), ("--latents", "new.npz")])
    assert source.read_bytes() == b"precious"


def test_invert_refuses_latents_onto_the_input_or_the_output(tmp_path, model, clip, capsys):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    before = source.read_bytes()
    out = tmp_path / "out.mp4"
    for latents in (source, out, tmp_path / "." / "in.mp4"):
        code = main(["invert", str(source), "-o", str(out), "--latents", str(latents),
                     "--model", str(model), "--quiet"])
        assert code == 2
        assert "same file" in _one_error_line(capsys)
    assert source.read_bytes() == before
    assert _files(tmp_path) == {"in.mp4"}


def test_a_planted_temporary_name_is_never_written_through(tmp_path, model, clip):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    os.symlink(source, tmp_path / ".codes.npz.part")  # where the archive used to be staged
    assert main(["invert", str(source), "-o", str(tmp_path / "out.mp4"), "--latents",
                 str(tmp_path / "codes.npz"), "--model", str(model), "--quiet"]) == 0
    assert source.read_bytes() == clip.read_bytes()
    assert (tmp_path / ".codes.npz.part").is_symlink()  # untouched, not followed
    with np.load(tmp_path / "codes.npz") as codes:
        assert list(codes["frames"]) == list(range(10))


def test_live_refuses_to_record_over_its_source(tmp_path, model, clip, capsys):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    os.link(source, tmp_path / "linked.mp4")
    for output in (source, tmp_path / "linked.mp4"):
        assert main(["live", "--source", str(source), "--output", str(output), "--seconds",
                     "1", "--model", str(model), "--quiet"]) == 2
        assert "would destroy that input" in _one_error_line(capsys)
    assert source.read_bytes() == clip.read_bytes()


def test_edit_output_onto_a_model_file_or_the_input_is_refused(tmp_path, model, clip, capsys):
    before = (model / "generator.safetensors").read_bytes()
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model),
                 "-o", str(model / "generator.safetensors"), "--quiet"]) == 2
    _one_error_line(capsys)
    assert (model / "generator.safetensors").read_bytes() == before
    os.symlink(clip, tmp_path / "alias.mp4")
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model),
                 "-o", str(tmp_path / "alias.mp4"), "--quiet"]) == 2
    assert "same file as the input" in _one_error_line(capsys)


def test_other_commands_check_their_outputs_against_their_inputs(tmp_path, capsys):
    generator = tmp_path / "g.safetensors"
    assert main(["models", "init", str(generator), "--resolution", "8", "--channel-max", "8",
                 "--n-mlp", "1"]) == 0
    before = generator.read_bytes()
    capsys.readouterr()
    os.link(generator, tmp_path / "same.safetensors")
    for argv in (["models", "convert", str(generator), str(tmp_path / "same.safetensors"),
                  "--force"],
                 ["directions", "fit", "--model", str(generator), "--attr", "sefa", "-o",
                  str(generator), "--force"],
                 ["bench", "clip", str(generator), "--out", str(generator)],
                 ["personalize", str(generator), "-o", str(tmp_path / "same.safetensors")],
                 ["train", "refine", "--generator", str(generator), "--encoder", "e.pt",
                  "--image", "i.png", "--out", str(generator), "--force"]):
        assert main(argv) == 2, argv
        assert "same file" in _one_error_line(capsys), argv
    assert generator.read_bytes() == before
    # pti writes OUT and OUT.pivot.npz: the derived pivot may not be the --pivot it reads.
    pivot = tmp_path / "tuned.pivot.npz"
    np.savez(pivot, w=np.zeros((2, 512), np.float32))
    assert main(["train", "pti", "--generator", str(generator), "--image", "i.png",
                 "--pivot", str(pivot), "--out", str(tmp_path / "tuned.safetensors")]) == 2
    assert "pivot output" in _one_error_line(capsys)


def test_batch_checks_the_report_and_outputs_against_inputs_by_identity(tmp_path, clip,
                                                                        capsys):
    source = tmp_path / "a.mp4"
    source.write_bytes(clip.read_bytes())
    os.link(source, tmp_path / "report.json")
    assert main(["batch", "invert", str(source), "-o", str(tmp_path / "out"), "--report",
                 str(tmp_path / "report.json"), "--quiet"]) == 2
    assert "same file as the input" in _one_error_line(capsys)
    assert source.read_bytes() == clip.read_bytes() and not (tmp_path / "out").exists()


# === 2. broken outputs reported as success =====================================================


def test_writer_shifts_a_negative_start_to_zero_and_every_frame_decodes(tmp_path):
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    images = [pattern_frame(i, (64, 48)) for i in range(24)]
    source = _write_clip(tmp_path / "cut.ts", images, first_pts=-5,
                         options={"avoid_negative_ts": "disabled"})
    reader = VideoReader(source)
    frames = list(reader)
    assert frames[0].pts < 0  # the clip really starts before zero
    with VideoWriter(tmp_path / "out.mp4", reader.info, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    times = _decoded(tmp_path / "out.mp4")
    assert len(times) == 24
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert np.diff(times) == pytest.approx([0.04] * 23, abs=1e-4)


def test_edit_of_a_clip_cut_before_zero_writes_a_decodable_video(tmp_path, model):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    source = _write_clip(tmp_path / "cut.ts", [f.image for f in _real_frames(8)],
                         first_pts=-3, options={"avoid_negative_ts": "disabled"})
    bundle = load_model_bundle(model)
    stats = process_video(source, tmp_path / "out.mp4", bundle, PipelineConfig(),
                          resolve_editor(bundle, "smile", 2.0), progress=False)
    times = _decoded(tmp_path / "out.mp4")
    assert stats.frames == len(times) == 8 and times[0] == pytest.approx(0.0, abs=1e-6)


def test_writer_verifies_what_it_wrote_and_leaves_nothing_when_it_does_not_decode(tmp_path):
    from vidinv.video.errors import VideoWriteError
    from vidinv.video.reader import VideoInfo
    from vidinv.video.writer import VideoWriter

    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, VideoInfo.for_frames(64, 48, 25), preset="ultrafast")
    writer.open()
    for i in range(12):
        writer.write(_frame(i))
    class _Damaging:  # the muxer "succeeds" but the file on disk is cut short
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def close(self):
            self._container.close()
            data = Path(writer._tmp_path).read_bytes()
            Path(writer._tmp_path).write_bytes(data[: len(data) // 3])

    writer._container = _Damaging(writer._container)
    with pytest.raises(VideoWriteError, match="read back"):
        writer.close()
    assert _files(tmp_path) == set()


def _frame(index: int):
    from vidinv.frame import Frame

    return Frame(index=index, image=pattern_frame(index, (64, 48)), pts=None, time_base=None)


@pytest.mark.parametrize("strength", ["nan", "inf", "-inf", "1e30", "101"])
def test_absurd_strengths_are_refused_at_the_cli_before_work(strength, tmp_path, clip, capsys):
    out = tmp_path / "out.mp4"
    assert main(["edit", str(clip), "--attr", "smile", f"--strength={strength}", "-o", str(out),
                 "--model", str(tmp_path / "no-model-needed")]) == 2
    assert "strength" in _one_error_line(capsys)
    assert main(["live", "--source", str(clip), f"--strength={strength}", "--output", str(out),
                 "--model", str(tmp_path / "no-model-needed")]) == 2
    assert "strength" in _one_error_line(capsys)
    assert not out.exists()


def test_absurd_strengths_and_directions_are_refused_by_the_python_api(model):
    from vidinv.latent.directions import Direction
    from vidinv.latent.editing import CombinedEditor, LatentEditor, apply_direction
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import parse_edits, resolve_editor
    from vidinv.pipeline.live import LiveControls

    bundle = load_model_bundle(model)
    for bad in (float("nan"), float("inf"), 1e30, -500.0):
        with pytest.raises(StrengthError):
            resolve_editor(bundle, "smile", bad)
    editor = resolve_editor(bundle, "smile", 1.0)
    with pytest.raises(StrengthError):
        editor.strength = float("nan")
    assert editor.strength == 1.0
    with pytest.raises(StrengthError):
        apply_direction(torch.zeros(2, 8, 512), torch.ones(512), torch.tensor([1.0, np.inf]))
    for vector in (torch.full((512,), 1e6), torch.full((512,), float("nan"))):
        with pytest.raises(DirectionError):
            Direction("huge", vector)
    with pytest.raises(DirectionError, match="beyond"):
        LatentEditor(bundle.generator, torch.full((512,), 1e30))
    for item in ("smile=nan", "smile=1e30", "smile=-inf"):
        with pytest.raises(StrengthError):
            parse_edits([item])
    combined = CombinedEditor.from_editors({"smile": editor})
    with pytest.raises(StrengthError):
        CombinedEditor(bundle.generator, combined.offsets, {"smile": float("inf")})
    combined.strengths["smile"] = float("nan")  # a slider or script sets it between calls
    with pytest.raises(StrengthError):
        combined(torch.zeros(bundle.generator.n_latent, 512), torch.zeros(16, 16, 16))
    # live's +/- keys cannot push the strength past the bound
    combined.strengths["smile"] = 99.0
    controls = LiveControls(combined)
    for _ in range(5):
        controls.press(ord("+"))
    assert combined.strengths["smile"] == 100.0


def test_bench_clip_on_a_non_video_is_one_line(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    assert main(["bench", "clip", str(text), "--out", str(tmp_path / "bench"), "--no-id"]) == 2
    _one_error_line(capsys)
    from vidinv.video.images import write_image

    picture = tmp_path / "face.png"
    write_image(picture, pattern_frame(0, (64, 48)))
    assert main(["bench", "clip", str(picture), "--out", str(tmp_path / "bench"),
                 "--no-id"]) == 2
    assert "needs a video" in _one_error_line(capsys)
    assert not (tmp_path / "bench").exists()


# === 3. a failed or killed run leaves no files ===================================================


def test_latents_onto_an_existing_folder_fails_before_any_frame(tmp_path, model, clip, capsys):
    (tmp_path / "codes").mkdir()
    code = main(["invert", str(clip), "-o", str(tmp_path / "out.mp4"), "--latents",
                 str(tmp_path / "codes"), "--model", str(model), "--quiet"])
    assert code == 2
    assert "existing folder" in _one_error_line(capsys)
    assert _files(tmp_path) == {"codes"} and not any((tmp_path / "codes").iterdir())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_run_removes_its_partial_files(signum, tmp_path, model):
    folder = tmp_path / "work"
    folder.mkdir()
    source = _write_clip(folder / "in.mp4", [f.image for f in _real_frames(40)] * 3)
    process = subprocess.Popen(
        [sys.executable, "-m", "vidinv.cli", "invert", str(source), "-o",
         str(folder / "out.mp4"), "--latents", str(folder / "codes.npz"), "--model", str(model),
         "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while not any(name.endswith(".partial.mp4") for name in _files(folder)):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert _files(folder) == {"in.mp4"}


# === 4. small files that cost gigabytes ===========================================================


def _native_file(path: Path, kind: str, config, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    text = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors, str(path), metadata={"vidinv.kind": kind, "vidinv.format_version": "1",
                                             "vidinv.config": text})
    return path


def test_native_config_is_checked_against_the_tensors_before_anything_is_built(tmp_path):
    from vidinv.models.native import load_native_module
    from vidinv.models.stylegan2 import StyleGAN2Generator

    small = StyleGAN2Generator(8, n_mlp=1, channel_max=8)
    tensors = small.state_dict()
    config = {**small.config, "style_dim": 20000}
    path = _native_file(tmp_path / "g.safetensors", "generator", config, tensors)
    built_on: list[str] = []

    def recording_build(**kwargs):
        module = StyleGAN2Generator(**kwargs)
        built_on.append(next(module.parameters()).device.type)
        return module

    with pytest.raises(CheckpointError, match="shape"):
        load_native_module(path, "generator", recording_build, "a generator")
    assert built_on == ["meta"]  # never allocated for real
    huge = _native_file(tmp_path / "h.safetensors", "generator", {**small.config,
                                                                  "n_mlp": 10**7}, tensors)
    with pytest.raises(CheckpointError, match="beyond"):
        load_native_module(huge, "generator", recording_build, "a generator")
    assert built_on == ["meta"]


def test_stride0_and_overlapping_tensors_are_refused_in_torch_files(tmp_path):
    from vidinv.latent.directions import load_directions
    from vidinv.models.generator_io import load_generator

    state = random_rosinality_state(8, channels={4: 8, 8: 8}, n_mlp=1)
    state["style.1.weight"] = torch.ones(1).as_strided((512, 512), (0, 0))
    torch.save({"g_ema": state, "latent_avg": torch.zeros(512)}, tmp_path / "g.pt")
    assert (tmp_path / "g.pt").stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="stride"):
        load_generator(tmp_path / "g.pt")
    torch.save(torch.ones(1).as_strided((1, 1 << 28), (0, 0)), tmp_path / "d.pt")
    with pytest.raises(DirectionError, match="stride"):
        load_directions(tmp_path / "d.pt")
    overlap = torch.arange(16.0).as_strided((8, 8), (1, 1))  # rows overlap: 64 of 16 values
    torch.save({"w": overlap}, tmp_path / "o.pt")
    with pytest.raises(DirectionError, match="overlapping"):
        load_directions(tmp_path / "o.pt")


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _nvidia_storage(n: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.zeros(n).storage()


def test_stride0_tensors_and_arrays_are_refused_in_nvidia_pickles(tmp_path):
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state

    view = _Reduce(torch._utils._rebuild_tensor_v2, _nvidia_storage(), 0, (1 << 30,), (0,),
                   False, OrderedDict())
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"G_ema": view}))
    with pytest.raises(CheckpointError, match="stride-0"):
        load_nvidia_generator_state(tmp_path / "t.pkl")
    # numpy.ndarray called directly: a stride-0 view of any size over 4 bytes
    array = _Reduce(np.ndarray, (1 << 30,), np.dtype("f4"), b"\0\0\0\0", 0, (0,))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"G_ema": array}))
    with pytest.raises(CheckpointError):
        load_nvidia_generator_state(tmp_path / "a.pkl")


def _deflate_bomb(path: Path, member: str, megabytes: int = 64, prefix: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(member, "w", force_zip64=True) as handle:
            handle.write(prefix)
            block = b"\0" * 2**20
            for _ in range(megabytes):
                handle.write(block)
    return path


def test_deflate_bombs_are_refused_before_inflating(tmp_path):
    from vidinv.latent.directions import load_directions
    from vidinv.models.generator_io import load_generator

    bomb = _deflate_bomb(tmp_path / "g.pt", "archive/data/0")
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_generator(bomb)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (64 * 2**18,)})
    npz = _deflate_bomb(tmp_path / "pca.npz", "lat_comp.npy", prefix=header.getvalue())
    with pytest.raises(DirectionError, match="zip bomb"):
        load_directions(npz)


def test_npy_header_may_not_declare_more_than_the_file_holds(tmp_path):
    from vidinv.latent.directions import load_directions

    path = tmp_path / "smile_boundary.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1, 10**12)})
    path.write_bytes(header.getvalue() + b"\0" * 2048)
    with pytest.raises(DirectionError, match="declares"):
        load_directions(path)


def _forge_legacy_numel(data: bytes) -> bytes:
    """A legacy torch.save of 4 elements, its declared element count raised to 2³¹ − 1."""
    marker = data.index(b"cpu")  # the count is pickled as a 1-byte int after the location
    at = data.index(b"K\x04", marker)
    return data[:at] + b"J" + struct.pack("<i", 2**31 - 1) + data[at + 2:]


def test_legacy_torch_file_declaring_huge_storages_is_refused(tmp_path):
    from vidinv.models.generator_io import load_generator
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state

    path = tmp_path / "legacy.pt"
    torch.save({"g_ema": {"x": torch.zeros(4)}}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(_forge_legacy_numel(path.read_bytes()))
    with pytest.raises(CheckpointError, match="declare"):
        load_generator(path)
    # the same forgery as a storage payload inside an NVIDIA pickle
    buffer = io.BytesIO()
    torch.save(_nvidia_storage(4), buffer, _use_new_zipfile_serialization=False)
    payload = _forge_legacy_numel(buffer.getvalue())
    (tmp_path / "n.pkl").write_bytes(pickle.dumps(
        {"G_ema": _Reduce(torch.storage._load_from_bytes, payload)}))
    with pytest.raises(CheckpointError, match="declare"):
        load_nvidia_generator_state(tmp_path / "n.pkl")


def test_a_bad_direction_file_is_skipped_with_a_warning(tmp_path, model, caplog, capsys):
    import shutil

    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import available_attributes

    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    bad = folder / "directions"
    _native_file(bad / "malformed.safetensors", "direction",
                 {"directions": ["not-an-entry"]}, {"direction.0": torch.zeros(512)})
    _native_file(bad / "layers.safetensors", "direction",
                 {"directions": [{"name": "x", "kind": "k", "layers": ["a", "b"]}]},
                 {"direction.0": torch.zeros(512)})
    _native_file(bad / "huge.safetensors", "direction",
                 {"directions": [{"name": "y", "kind": "k"}]},
                 {"direction.0": torch.full((512,), 1e30)})
    np.save(bad / "wide.npy", np.zeros((1, 7), np.float32))
    with caplog.at_level(logging.WARNING, logger="vidinv"):
        names = available_attributes(load_model_bundle(folder))
    assert set(names) == {"smile"}
    skipped = {Path(r.getMessage().split()[1].rstrip(":")).name for r in caplog.records
               if r.getMessage().startswith("skipping")}
    assert skipped == {"malformed.safetensors", "layers.safetensors", "huge.safetensors",
                       "wide.npy"}
    assert main(["edit", "--list-attrs", "--model", str(folder)]) == 0
    assert "smile" in capsys.readouterr().out


# === 5. the restricted unpickler itself ==========================================================


def test_build_on_an_allow_listed_global_is_refused_and_changes_nothing(tmp_path):
    from vidinv.models import nvidia_pickle
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state

    name_before = nvidia_pickle._rebuild_tensor.__name__
    defaults_before = nvidia_pickle._rebuild_tensor.__defaults__
    for module, name in (("torch._utils", "_rebuild_tensor_v2"),
                         ("collections", "OrderedDict"), ("dnnlib.util", "EasyDict")):
        # GLOBAL module name; state ({}, {"__name__": "pwned", "__defaults__": (1,)}); BUILD
        payload = (b"\x80\x02}q\x00X\x05\x00\x00\x00G_emaq\x01c" + module.encode() + b"\n"
                   + name.encode() + b"\n}}(X\x08\x00\x00\x00__name__X\x05\x00\x00\x00pwned"
                   b"X\x0c\x00\x00\x00__defaults__K\x01\x85u\x86bs.")
        (tmp_path / "b.pkl").write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="applies state"):
            load_nvidia_generator_state(tmp_path / "b.pkl")
    assert nvidia_pickle._rebuild_tensor.__name__ == name_before
    assert nvidia_pickle._rebuild_tensor.__defaults__ == defaults_before
    assert OrderedDict.__name__ == "OrderedDict"


def test_tensor_setstate_cannot_re_view_its_storage(tmp_path):
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state

    class _Tensor(_Reduce):
        def __reduce__(self):  # REDUCE a valid tensor, then BUILD Tensor.__setstate__ on it
            return (self.func, self.args,
                    (_nvidia_storage(), 0, (1 << 30,), (0,)))

    tensor = _Tensor(torch._utils._rebuild_tensor_v2, _nvidia_storage(), 0, (1,), (1,), False,
                     OrderedDict())
    (tmp_path / "s.pkl").write_bytes(pickle.dumps({"G_ema": tensor}, protocol=2))
    with pytest.raises(UnsafePickleError, match="state"):
        load_nvidia_generator_state(tmp_path / "s.pkl")


def test_download_accepts_only_http_urls(tmp_path):
    from vidinv.models.registry import download

    secret = tmp_path / "secret"
    secret.write_text("x")
    for url in (f"file://{secret}", str(secret), "ftp://example.com/x"):
        with pytest.raises(DownloadError, match="http"):
            download(url, tmp_path / "got", expected_size=None, expected_sha256=None,
                     progress=False)
    assert not (tmp_path / "got").exists()


# === 6. one line instead of a traceback ==========================================================


@pytest.mark.parametrize("assignment", [
    "face.mask=bogus", "face.color_match=bogus", "face.crop_smoothing=bogus",
    "face.paste=bogus", "face.landmarks=bogus", "latent.smoothing=bogus", "latent.sigma=nan",
    "latent.sigma=-1", "latent.sigma=0", "latent.alpha=2", "latent.alpha=0",
    "latent.alpha=nan", "engine.device=meta", "engine.backend=bogus",
    "latent.fine_layers_from=999", "face.max_gap=-5", "engine.batch_size=-3",
    "engine.batch_size=0", "output.crf=99", "output.preset=bogus", "queue_size=0",
    "edit.strength=inf", "engine.precision=fp8", "engine.threads=-1", "adapt.tune_frames=0"])
def test_settings_are_checked_where_they_are_parsed(assignment):
    with pytest.raises(ConfigError) as info:
        PipelineConfig().with_overrides([assignment])
    message = str(info.value)
    assert assignment.split("=")[0] in message and "\n" not in message
    if assignment.endswith("bogus"):
        assert "one of:" in message


def test_valid_settings_still_pass():
    config = PipelineConfig().with_overrides([
        "face.mask=landmarks", "face.color_match=lab", "face.paste=render",
        "latent.sigma=0.5", "latent.alpha=1", "engine.device=cuda:1", "face.max_gap=0",
        "latent.fine_layers_from=-1", "engine.batch_size=1"])
    assert config.engine.device == "cuda:1" and config.latent.alpha == 1.0


def test_cli_batch_and_layers_beyond_the_model_are_one_line(tmp_path, model, clip, capsys):
    out = tmp_path / "out.mp4"
    for extra in (["--batch", "-3"], ["--batch", "0"],
                  ["--set", "latent.fine_layers_from=12"]):
        assert main(["edit", str(clip), "--attr", "smile", "--model", str(model), "-o",
                     str(out), "--quiet", *extra]) == 2, extra
        _one_error_line(capsys)
    assert not out.exists()


def test_deep_nesting_is_one_line(tmp_path):
    from vidinv.models.generator_io import load_generator

    deep = "[" * 100_000 + "]" * 100_000
    path = _native_file(tmp_path / "g.safetensors", "generator", deep,
                        {"x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="JSON"):
        load_generator(path)
    nested: list = []
    for _ in range(200):
        nested = [nested]
    torch.save({"g_ema": {"style.1.weight": torch.zeros(1)}, "deep": nested}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="nested"):
        load_generator(tmp_path / "d.pt")


def test_deeply_nested_nvidia_modules_and_presets_are_one_line(tmp_path):
    from vidinv.config import load_preset
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state

    def text(value: str) -> bytes:
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    level = (b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n}(" + text("type")
             + text("class") + text("class_name") + text("Generator") + text("state") + b"}"
             + text("_init_kwargs") + b"}s" + text("_modules") + b"}" + text("m"))
    depth = 5000
    payload = (b"\x80\x02}" + text("G_ema") + level * depth + b"N"
               + b"ssu\x85R" * depth + b"s.")
    (tmp_path / "deep.pkl").write_bytes(payload)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_nvidia_generator_state(tmp_path / "deep.pkl")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError):
        load_preset(str(tmp_path / "deep.toml"))


def test_rosinality_files_missing_layers_or_with_impossible_resolutions(tmp_path):
    from vidinv.models.generator_io import load_generator

    state = random_rosinality_state(16, channels={4: 8, 8: 8, 16: 8}, n_mlp=1)
    gap = {k: v for k, v in state.items() if not k.startswith("to_rgbs.0.")}
    torch.save({"g_ema": gap, "latent_avg": torch.zeros(512)}, tmp_path / "gap.pt")
    with pytest.raises(CheckpointError, match="to_rgbs"):
        load_generator(tmp_path / "gap.pt")
    missing = {k: v for k, v in state.items() if not k.startswith("convs.1.")}
    torch.save({"g_ema": missing, "latent_avg": torch.zeros(512)}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing key"):
        load_generator(tmp_path / "missing.pt")
    tall = dict(state)
    for j in range(2, 30):
        tall[f"to_rgbs.{j}.conv.weight"] = torch.zeros(1, 3, 8, 1, 1)
    torch.save({"g_ema": tall, "latent_avg": torch.zeros(512)}, tmp_path / "tall.pt")
    with pytest.raises(CheckpointError, match="beyond 4096 px"):
        load_generator(tmp_path / "tall.pt")


def test_outputs_that_cannot_be_written_are_one_line(tmp_path, model, clip, capsys,
                                                     monkeypatch):
    (tmp_path / "folder.mp4").mkdir()
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model), "-o",
                 str(tmp_path / "folder.mp4")]) == 2
    assert "existing folder" in _one_error_line(capsys)
    generator = model / "generator.safetensors"
    assert main(["models", "convert", str(generator), str(tmp_path / "folder.mp4")]) == 2
    assert "existing folder" in _one_error_line(capsys)
    real_access = os.access
    readonly = tmp_path / "ro"
    readonly.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly
                        else real_access(p, mode))  # a read-only mount, as root cannot chmod
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model), "-o",
                 str(readonly / "out.mp4")]) == 2
    assert "read-only" in _one_error_line(capsys)


def test_device_outputs_and_names_too_long_for_the_temporary_file_are_refused(
        tmp_path, model, clip, capsys):
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model), "-o",
                 "/dev/null"]) == 2
    assert "not a regular file" in _one_error_line(capsys)
    assert Path("/dev/null").is_char_device()
    long_name = tmp_path / ("a" * 240 + ".mp4")  # fits, but its hidden temporary name would not
    assert main(["edit", str(clip), "--attr", "smile", "--model", str(model), "-o",
                 str(long_name)]) == 2
    assert "too long" in _one_error_line(capsys)


def test_a_full_disk_mid_run_is_one_line_and_leaves_nothing(tmp_path, model, clip, capsys,
                                                          monkeypatch):
    import errno

    from vidinv.video.writer import VideoWriter

    real_write = VideoWriter.write

    def write_until_full(self, frame):
        if self.frames_written == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", write_until_full)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    assert main(["invert", str(clip), "-o", str(out_folder / "inv.mp4"), "--latents",
                 str(out_folder / "codes.npz"), "--model", str(model), "--quiet"]) == 2
    assert "No space left on device" in _one_error_line(capsys)
    assert _files(out_folder) == set()


def test_out_of_range_command_options_are_one_line(tmp_path, capsys):
    generator = tmp_path / "g.safetensors"
    assert main(["models", "init", str(generator), "--resolution", "8", "--channel-max", "8",
                 "--n-mlp", "1"]) == 0
    capsys.readouterr()
    for argv in (["models", "init", str(tmp_path / "y.safetensors"), "--resolution", "1048576"],
                 ["models", "init", str(tmp_path / "y.safetensors"), "--style-dim", "-5"],
                 ["models", "init", str(tmp_path / "y.safetensors"),
                  "--channel-multiplier=nan"],
                 ["engines", "export", str(generator), "--k", "99", "-o", str(tmp_path / "e")],
                 ["directions", "fit", "--model", str(generator), "--attr", "sefa",
                  "--components", "-3", "-o", str(tmp_path / "d.safetensors")],
                 ["directions", "fit", "--model", str(generator), "--attr", "sefa",
                  "--components", "9999", "-o", str(tmp_path / "d.safetensors")],
                 ["live", "--source", str(generator), "--seconds=nan", "--output",
                  str(tmp_path / "o.mp4")],
                 ["train", "generator", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                  "--resolution", "8", "--lr=nan", "--steps", "1"],
                 ["train", "encoder", "--generator", str(generator), "--out",
                  str(tmp_path / "r"), "--lr=nan", "--k", "1", "--steps", "1"]):
        assert main(argv) == 2, argv
        _one_error_line(capsys)
    assert _files(tmp_path) == {"g.safetensors"}


def test_cache_pointing_at_a_file_is_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("")
    monkeypatch.setenv("VIDINV_CACHE", str(cache))
    result = subprocess.run([sys.executable, "-m", "vidinv.cli", "models", "list"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "VIDINV_CACHE" in result.stderr


# === 7. the right advice ==========================================================================


def test_legacy_torch_save_rosinality_file_loads_like_the_zip_one(tmp_path):
    from vidinv.models.generator_io import load_generator, sniff_checkpoint_kind

    state = random_rosinality_state(8, channels={4: 8, 8: 8}, n_mlp=1)
    content = {"g_ema": state, "latent_avg": torch.randn(512)}
    torch.save(content, tmp_path / "zip.pt")
    torch.save(content, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert sniff_checkpoint_kind(tmp_path / "legacy.pt") == "torch"
    ws = torch.randn(1, 4, 512)
    assert torch.equal(load_generator(tmp_path / "legacy.pt").synthesis(ws),
                       load_generator(tmp_path / "zip.pt").synthesis(ws))


def test_torchscript_archive_gets_advice_not_re_download(tmp_path):
    from vidinv.models.generator_io import load_generator

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="TorchScript") as info:
        load_generator(tmp_path / "g.pt")
    assert "state_dict" in str(info.value) and "re-download" not in str(info.value)


def test_edit_and_invert_take_pictures_and_folders_of_pictures(tmp_path, model, capsys):
    from vidinv.video.images import read_image, write_image

    frames = _real_frames(3)
    picture = tmp_path / "face.png"
    write_image(picture, frames[0].image)
    assert main(["edit", str(picture), "--attr", "smile", "--model", str(model), "--quiet"]) == 0
    edited = read_image(tmp_path / "face_smile.png")
    assert edited.shape == frames[0].image.shape
    folder = tmp_path / "frames"
    folder.mkdir()
    for frame in frames:
        write_image(folder / f"f{frame.index}.jpg", frame.image)
    assert main(["invert", str(folder), "--model", str(model), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "frames_inv").iterdir()) == [
        "000000.png", "000001.png", "000002.png"]
    capsys.readouterr()
    # a folder output that already holds files is refused, never merged into
    assert main(["invert", str(folder), "-o", str(tmp_path / "frames_inv"), "--model",
                 str(model), "--quiet"]) == 2
    assert "not an empty folder" in _one_error_line(capsys)
    # a picture with a video suffix gets told exactly what to do
    disguised = tmp_path / "face.mp4"
    disguised.write_bytes(picture.read_bytes())
    assert main(["edit", str(disguised), "--attr", "smile", "--model", str(model),
                 "-o", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    assert "name it .png or .jpg" in _one_error_line(capsys)


def test_help_says_what_happens_when_the_output_exists(capsys):
    for command in ("edit", "invert"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "replaced only when the run succeeds" in text
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "replaced only when the run succeeds" in " ".join(readme.split())



def _list_files(secret: Path) -> dict[str, bytes]:
    """Files that name other files, each a way FFmpeg would read ``secret`` if it let them
    (named relative to the list: concat's safe mode refuses absolute names)."""
    playlist = (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret.name}\n"
                "#EXT-X-ENDLIST\n").encode()
    concat = f"ffconcat version 1.0\nfile '{secret.name}'\n".encode()
    return {"list.m3u8": playlist, "list.mp4": playlist, "cat.ffconcat": concat,
            "cat.mp4": concat, "notes.txt": b"just some words\n" * 40,
            "notes.mp4": b"just some words\n" * 40}


def test_playlists_concat_lists_and_text_are_no_clip_anywhere(tmp_path, model, clip, capsys):
    """FFmpeg, left to itself, opens an HLS playlist or a concat list as a video made of the
    files it names (and a .txt as a 'tty' video): every command refuses them in one line,
    exit 2 (batch: 1, the video failed), and writes nothing."""
    from vidinv.errors import VidinvError
    from vidinv.video.reader import VideoReader

    secret = tmp_path / "in" / "secret.mp4"
    (tmp_path / "in").mkdir()
    secret.write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    for name, data in _list_files(secret).items():
        hostile = tmp_path / "in" / name
        hostile.write_bytes(data)
        if name in ("list.m3u8", "cat.ffconcat", "cat.mp4"):  # FFmpeg on its own reads them
            with av.open(str(hostile)) as opened:
                assert opened.format.name in ("hls", "concat") and opened.streams.video
        kind = {"list": "playlist", "cat": "concat list", "notes": "text file"}[
            name.split(".")[0]]
        model_args = ["--model", str(model), "--quiet"]
        for command in (["edit", str(hostile), "--attr", "smile", "-o", str(out / "e.mp4"),
                         *model_args],
                        ["invert", str(hostile), "-o", str(out / "i.mp4"), *model_args],
                        ["live", "--source", str(hostile), "--no-window", "--output",
                         str(out / "l.mp4"), *model_args],
                        ["personalize", str(hostile), "-o", str(out / "m")]):
            assert main(command) == 2, (name, command[0])
            line = _one_error_line(capsys)
            assert f"is a {kind}" in line, (name, command[0], line)
            assert not list(out.iterdir()), (name, command[0])
        batch_out = tmp_path / "batch" / name
        assert main(["batch", "edit", str(hostile), "-o", str(batch_out), "--attr", "smile",
                     *model_args]) == 1  # the one video failed
        capsys.readouterr()
        assert f"is a {kind}" in (batch_out / "vidinv-batch.json").read_text()
        assert not [p for p in batch_out.iterdir() if p.suffix == ".mp4"]
        with pytest.raises(VidinvError, match=f"is a {kind}"):
            VideoReader(hostile)


# --- MediaPipe's own model files -----------------------------------------------------------


def _mediapipe_copy(root: Path, damage: str | None, how: str) -> Path:
    """A ``mediapipe`` package under ``root`` made of symlinks to the installed one, with the
    file ``damage`` (relative to the package) removed or replaced by a damaged copy."""
    import mediapipe

    real = Path(mediapipe.__file__).parent
    site = real.parent
    for entry in site.iterdir():  # its wheel record and bundled libraries too
        if entry.name.startswith(("mediapipe.libs", "mediapipe_", "mediapipe-")):
            (root / entry.name).symlink_to(entry)

    def mirror(source: Path, target: Path) -> None:
        target.mkdir()
        for entry in source.iterdir():
            relative = entry.relative_to(real).as_posix()
            if damage is not None and damage.startswith(relative + "/"):
                mirror(entry, target / entry.name)
            elif relative == damage:
                data = entry.read_bytes()
                if how == "corrupt":  # the header kept, the body scrambled
                    middle = len(data) // 2
                    (target / entry.name).write_bytes(
                        data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 4096])
                        + data[middle + 4096:])
            else:
                (target / entry.name).symlink_to(entry)

    mirror(real, root / "mediapipe")
    return root


_DETECT = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from vidinv.cli.app import main
from vidinv.face.landmarks import MediaPipeLandmarks
from vidinv.errors import VidinvError
import mediapipe
assert mediapipe.__file__.startswith({root!r}), mediapipe.__file__
try:
    MediaPipeLandmarks().detect_boxes(np.zeros((64, 64, 3), np.uint8))
except VidinvError as error:
    print("vidinv: error:", error, file=sys.stderr)
    sys.exit(2)
print("ran")
"""


@pytest.mark.parametrize("damage,how,expected", [
    ("modules/face_landmark/face_landmark.tflite", "missing", "is missing"),
    ("modules/face_detection/face_detection_full_range_sparse.tflite", "corrupt",
     "is damaged"),
    ("modules/face_landmark/face_landmark_front_cpu.binarypb", "corrupt",
     "is not a MediaPipe graph"),
    (None, "", ""),
])
def test_a_missing_or_damaged_mediapipe_model_file_is_one_line(tmp_path, damage, how, expected):
    """MediaPipe crashes (no message) on a corrupt .tflite and raises deep inside its graph
    for a missing one; vidinv checks the files (header, and the sha256 the wheel recorded)
    before MediaPipe loads them."""
    pytest.importorskip("mediapipe")
    root = _mediapipe_copy(tmp_path, damage, how)
    done = subprocess.run([sys.executable, "-c", _DETECT.format(root=str(root))],
                          capture_output=True, text=True, timeout=300)
    if damage is None:  # the mirror itself works: the real files load
        assert done.returncode == 0 and "ran" in done.stdout, done.stderr[-1500:]
        return
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("vidinv: error")]
    assert len(lines) == 1 and expected in lines[0] and damage in lines[0], done.stderr[-1500:]
    assert "reinstall MediaPipe" in lines[0] and "dlib" in lines[0]


# --- pictures that declare more than they hold; folders that hold videos ----------------------


def _png_bomb(path: Path, side: int) -> Path:
    """A valid grey PNG of side × side zero pixels: megabytes on disk, side² bytes decoded."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    squeeze = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one grey byte per pixel
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_a_picture_that_declares_too_many_pixels_is_refused_before_decoding(tmp_path):
    bomb = _png_bomb(tmp_path / "bomb.png", 12_000)  # 144 Mpx, 432 MB as BGR
    assert bomb.stat().st_size < 2_000_000
    # the peak of this process only: VmHWM starts afresh at exec (ru_maxrss would carry the
    # forking pytest process's size over)
    code = ("from vidinv.video.images import read_image\n"
            "from vidinv.errors import VidinvError\n"
            f"try:\n    read_image({str(bomb)!r})\n"
            "except VidinvError as error:\n    print(error)\n"
            "print([line.split()[1] for line in open('/proc/self/status')\n"
            "       if line.startswith('VmHWM:')][0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    message, peak_kib = done.stdout.strip().splitlines()[-2:]
    assert "declares 12000×12000 pixels" in message and "80 Mpx" in message, done.stderr
    assert int(peak_kib) < 400_000, peak_kib  # decoding it would take 432 MB at least
    # the CLI: one line, nothing written
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, "-m", "vidinv.cli", "edit", str(bomb), "--attr",
                           "smile", "-o", str(out), "--quiet"], capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.startswith("vidinv: error")]
    assert done.returncode == 2 and len(lines) == 1 and "12000×12000" in lines[0], done.stderr
    assert not out.exists()


def test_edit_of_a_folder_holding_videos_and_pictures_says_so(tmp_path, clip, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "talk.mp4").write_bytes(Path(clip).read_bytes())
    from vidinv.video.images import write_image

    for name in ("a.png", "b.jpg"):
        write_image(folder / name, pattern_frame(0, (64, 48)))
    assert main(["edit", str(folder), "--attr", "smile", "-o", str(tmp_path / "out"),
                 "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "holds 1 video and 2 pictures" in lines[0] and "vidinv batch edit" in lines[0]
    assert not (tmp_path / "out").exists()
