"""`vidinv personalize`: expression warps, the build on a tiny model, resume, user errors; and
the "model does not know this face" check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.media import aligned_real_face, make_video, real_clip_head
from tests.model_fixtures import make_tiny_model


@pytest.fixture(scope="module")
def crop_and_points():
    """One aligned 128 px crop of the real clip and its MediaPipe mesh in crop pixels."""
    return aligned_real_face(10, 128)


def _mesh(image: np.ndarray) -> np.ndarray:
    from vidinv.face.landmarks import MediaPipeLandmarks

    with MediaPipeLandmarks() as detector:
        return detector.detect(image)[0].points[:468]


def test_smile_warp_widens_and_lifts_the_mouth_and_keeps_the_eyes(crop_and_points):
    from vidinv.personalize.warps import warp_face

    crop, points = crop_and_points
    after = _mesh(warp_face(crop, points, "smile", 1.0))
    before = _mesh(crop)
    width = lambda p: np.linalg.norm(p[291] - p[61])  # noqa: E731
    interocular = np.linalg.norm(before[263] - before[33])
    assert width(after) - width(before) > 0.08 * interocular
    corner_height = lambda p: p[[61, 291], 1].mean() - p[[0, 17], 1].mean()  # noqa: E731
    assert corner_height(after) < corner_height(before) - 0.02 * interocular  # lifted
    assert np.abs(after[[33, 133, 362, 263]] - before[[33, 133, 362, 263]]).max() < 2.0


def test_eye_and_mouth_warps_move_what_they_name(crop_and_points):
    from vidinv.personalize.warps import warp_face

    crop, points = crop_and_points
    before = _mesh(crop)
    closed = _mesh(warp_face(crop, points, "eyes_closed", 1.0))
    opening = lambda p: (p[145, 1] - p[159, 1]) + (p[374, 1] - p[386, 1])  # noqa: E731
    assert opening(closed) < 0.9 * opening(before)  # weak at 128 px: the lids are ~4 px apart
    opened = _mesh(warp_face(crop, points, "mouth_open", 1.0))
    assert (opened[14, 1] - opened[13, 1]) > (before[14, 1] - before[13, 1]) + 4
    assert np.array_equal(warp_face(crop, points, "smile", 0.0), crop)


def test_expression_bank_covers_every_warp_and_amount(crop_and_points):
    from vidinv.face.expressions import WARPS
    from vidinv.personalize.tune import expression_bank

    crop, points = crop_and_points
    bank = expression_bank(crop[None], points[None], 32)
    assert bank["bank_images"].shape[1:] == (32, 32, 3)
    assert sorted(set(bank["bank_kind"].tolist())) == list(range(len(WARPS)))
    yaw = bank["bank_amount"][bank["bank_kind"] == WARPS.index("yaw")]
    assert yaw.min() == pytest.approx(-1.0) and yaw.max() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The real clip's first 30 frames."""
    return real_clip_head(tmp_path_factory.mktemp("clip") / "face.mp4", 30)


@pytest.fixture
def tiny_shapes(monkeypatch):
    """Networks small enough to train in seconds (the build's logic is unchanged)."""
    from vidinv.personalize import build

    monkeypatch.setattr(build, "GENERATOR_SHAPES", {64: (16, 2.0)})
    monkeypatch.setattr(build, "ENCODER_WIDTHS", (8, 8, 16, 16))
    monkeypatch.setattr(build, "ENCODER_BLOCKS", (1, 1, 1, 1))
    monkeypatch.setattr(build, "DIRECTION_FRAMES", 4)
    monkeypatch.setattr(build, "CALIBRATION_FRAMES", 2)
    monkeypatch.setattr(build, "SEFA_COMPONENTS", 2)
    from vidinv.personalize import data

    monkeypatch.setattr(data, "MIN_FACE_FRAMES", 8)


def test_personalize_builds_a_model_folder_that_edit_uses_and_resumes(tmp_path, tiny_shapes,
                                                                     monkeypatch):
    from vidinv.config import PipelineConfig
    from vidinv.models.folder import load_model_bundle
    from vidinv.personalize import tune
    from vidinv.personalize.build import Personalizer, PersonalizeSettings
    from vidinv.pipeline.attributes import available_attributes, resolve_editor
    from vidinv.pipeline.clip import process_video

    short_clip = real_clip_head(tmp_path / "face.mp4", 12)
    out = tmp_path / "me"
    settings = PersonalizeSettings(minutes=0.06, init="none", heldout=(10, 11))
    seen: list[str] = []
    original_train = tune.ExpressionTuner.train

    def interrupted(self, steps):
        raise KeyboardInterrupt

    tune.ExpressionTuner.train = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            Personalizer(short_clip, out, settings).run()
    finally:
        tune.ExpressionTuner.train = original_train
    data_file = out / ".personalize" / "data.npz"
    stamp = data_file.stat().st_mtime_ns
    assert (out / ".personalize" / "gan" / "done.json").is_file()  # finished steps are kept
    assert not (out / "generator.safetensors").exists()             # nothing looks finished

    # the clip's own open mouth is stored where it shows one (this clip's does not: one is
    # handed in; the warps of the data step were made before, without it)
    from vidinv.face import appearance

    teeth = np.random.default_rng(0).integers(0, 256, (9, 21, 3), dtype=np.uint8)
    found: list[int] = []

    def one_found(crops, points):
        found.append(len(crops))
        return appearance.MouthInside(teeth)

    monkeypatch.setattr(appearance, "find_mouth_inside", one_found)
    Personalizer(short_clip, out, settings,
                 progress=lambda stage, done, total: seen.append(stage)).run()
    assert found == [10]                                            # the training crops
    assert data_file.stat().st_mtime_ns == stamp                    # resumed, not redone
    assert "tune" in seen and "generator" not in seen
    bundle = load_model_bundle(out)
    assert np.array_equal(bundle.mouth_inside, teeth)
    assert set(available_attributes(bundle)) >= {"smile", "mouth_open", "eyes_open", "yaw",
                                                 "sefa0", "sefa1"}
    from vidinv.latent.directions import load_directions
    from vidinv.models.folder import direction_file, replaceable_model_folder
    from vidinv.personalize.calibrate import CANDIDATE_SCALES

    smile = load_directions(direction_file(out, "smile")).directions[0]  # calibrated as it reads
    measured = smile.meta["action_response"]
    assert measured["scales"] == [round(c, 4) for c in CANDIDATE_SCALES]
    assert len(measured["strength_2"]) == len(measured["strength_3"]) == len(CANDIDATE_SCALES)
    assert any(abs(smile.scale - c) < 1e-9 for c in CANDIDATE_SCALES)
    gaze = load_directions(direction_file(out, "gaze_horizontal")).directions[0]
    assert "action_response" not in gaze.meta and abs(gaze.scale - 1 / 3) < 1e-9  # nominal
    assert replaceable_model_folder(out) is None  # its manifest lists every file it wrote
    card = (out / "MODEL_CARD.md").read_text()
    assert "held-out crops" in card and "| tune |" in card
    edited = tmp_path / "edited.mp4"
    process_video(short_clip, edited, bundle,
                  PipelineConfig().with_overrides(["adapt.check_frames=0"]),
                  resolve_editor(bundle, "smile", 2.0), progress=False)
    assert edited.stat().st_size > 0


def _vidinv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidinv.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("vidinv: error")]


def test_personalize_user_errors_are_one_line_before_any_training(tmp_path, short_clip):
    no_face = make_video(tmp_path / "noface.mp4", n_frames=30, size=(96, 64)).path
    cases = [
        (["personalize", str(no_face), "-o", "a"], "no face"),
        (["personalize", str(tmp_path / "missing.mp4"), "-o", "b"], "no such file"),
        (["personalize", str(short_clip), "-o", "c", "--split", "1,1,1"], "--split"),
        (["personalize", str(short_clip), "-o", "d", "--heldout", "9"], "--heldout"),
        (["personalize", str(short_clip), "-o", "e", "--minutes", "-1"], "--minutes"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases.append((["personalize", str(short_clip), "-o", "full"], "already holds files"))
    for args, expected in cases:
        result = _vidinv(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = _error_lines(result)
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
    assert not any((tmp_path / name).exists() for name in "abcde")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_too_short_a_clip_is_refused(tmp_path, short_clip):
    from vidinv.personalize.data import PersonalizeInputError, collect_faces

    path = real_clip_head(tmp_path / "short.mp4", 10, source=short_clip)
    with pytest.raises(PersonalizeInputError, match="at least"):
        collect_faces(path, 128)


def test_an_unknown_face_gets_a_notice_and_strict_stops_without_output(tmp_path, short_clip):
    from vidinv.config import PipelineConfig
    from vidinv.models.folder import DEFAULT_MODEL_FOLDER, load_model_bundle
    from vidinv.pipeline.adapt import check_familiarity, probe_clip

    tiny = make_tiny_model(tmp_path / "tiny")  # an untrained model knows no face
    probe = probe_clip(short_clip, load_model_bundle(tiny), PipelineConfig(), first=2)
    assert probe is not None and len(probe.crops) == 2
    assert not check_familiarity(probe, load_model_bundle(tiny)).known
    default = load_model_bundle(DEFAULT_MODEL_FOLDER)  # trained on this very face
    known = check_familiarity(probe_clip(short_clip, default, PipelineConfig(), first=2),
                              default)
    assert known.known, known.describe()

    out = tmp_path / "out.mp4"
    result = _vidinv("edit", str(short_clip), "--attr", "smile", "--model", str(tiny),
                     "-o", str(out), "--strict", cwd=tmp_path)  # with the progress bar
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().count("\n") == 0, result.stderr  # the error is all there is
    assert "does not know the face" in _error_lines(result)[0]
    assert "vidinv personalize" in _error_lines(result)[0]
    result = _vidinv("edit", str(short_clip), "--attr", "smile", "--model", str(tiny),
                     "-o", str(out), "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and out.exists()
    notes = [line for line in result.stderr.splitlines() if "does not know the face" in line]
    assert len(notes) == 1 and notes[0].startswith("vidinv: note:")


def test_the_familiarity_check_is_a_stage_on_the_runs_own_first_faces(short_clip):
    """The check measures the first N encoded faces as the run encoded them (the same numbers
    as check_familiarity on those crops and codes), passes every frame on unchanged and in
    order, skips frames without a face or codes, checks a clip with fewer faces at its end;
    with ``hold`` (--strict) it holds the frames until its verdict (a report that raises stops
    the run before any frame went on) but no more than ``hold`` of them."""
    from vidinv.config import PipelineConfig
    from vidinv.frame import Frame
    from vidinv.models.folder import DEFAULT_MODEL_FOLDER, load_model_bundle
    from vidinv.pipeline.adapt import CheckFamiliarity, check_familiarity, probe_clip

    bundle = load_model_bundle(DEFAULT_MODEL_FOLDER)
    probe = probe_clip(short_clip, bundle, PipelineConfig(), first=3)
    assert probe is not None and len(probe.crops) == 3
    frames = []
    for number, (crop, w, features) in enumerate(zip(probe.crops, probe.w, probe.features,
                                                     strict=True)):
        frames.append(Frame(index=2 * number, image=crop, face_found=False))  # no face
        frames.append(Frame(index=2 * number + 1, image=crop, face_found=True, aligned=crop,
                            w=w, features=features))
    reports = []
    stage = CheckFamiliarity(bundle, 2, reports.append)
    assert [frame is given for frame, given in zip(stage(iter(frames)), frames,
                                                   strict=True)] == [True] * len(frames)
    expected = check_familiarity(_first_of(probe, 2), bundle)
    assert len(reports) == 1 and reports[0] == expected and reports[0].frames == 2
    reports.clear()
    list(CheckFamiliarity(bundle, 10, reports.append)(iter(frames)))  # fewer faces than asked
    assert len(reports) == 1 and reports[0] == check_familiarity(probe, bundle)
    reports.clear()
    list(CheckFamiliarity(bundle, 2, reports.append)(
        iter([f for f in frames if not f.face_found])))
    assert reports == []

    def stop(_familiarity) -> None:
        raise RuntimeError("unknown face")

    for hold, went_on in ((8, []), (2, [0]), (0, [0, 1, 2])):
        given = []
        with pytest.raises(RuntimeError, match="unknown face"):
            for frame in CheckFamiliarity(bundle, 2, stop, hold=hold)(iter(frames)):
                given.append(frame.index)
        assert given == went_on  # the 2nd face is at index 3


def _first_of(probe, count: int):
    from vidinv.pipeline.adapt import ClipProbe

    return ClipProbe(probe.crops[:count], probe.w[:count], probe.features[:count],
                     probe.indices[:count])


def test_tune_makes_the_reconstruction_closer_and_needs_torch(tmp_path, short_clip):
    from vidinv.config import PipelineConfig
    from vidinv.errors import VidinvError
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.adapt import adapt_to_clip, probe_clip
    from vidinv.stages.model import tensor_to_images

    bundle = load_model_bundle(make_tiny_model(tmp_path / "tiny"))
    config = PipelineConfig().with_overrides(["adapt.check_frames=0", "adapt.tune_steps=30",
                                              "adapt.tune_frames=4"])
    tuned, _ = adapt_to_clip(short_clip, bundle, config)
    assert tuned.generator is not bundle.generator
    probe = probe_clip(short_clip, bundle, config, indices=[0, 10, 19, 29])

    def error(generator) -> float:
        import cv2

        images = tensor_to_images(generator.synthesis(probe.w, features=probe.features, k=5))
        small = [cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA) for c in probe.crops]
        return float(np.mean([(a.astype(float) - b) ** 2 for a, b in zip(images, small,
                                                                          strict=True)]))

    assert error(tuned.generator) < 0.85 * error(bundle.generator)
    with pytest.raises(VidinvError, match="--backend torch"):
        adapt_to_clip(short_clip, bundle, config.with_overrides(["engine.backend=onnx"]))


def test_a_resume_must_have_the_same_clip_and_settings(tmp_path, short_clip):
    """A stopped run records its clip (sha256) and settings; ``personalize b.mp4 -o m`` over
    a's stopped run, or the same clip with other settings, is refused in one line naming
    --restart, before any work and without touching the run; --restart discards it."""
    from vidinv.personalize.build import (
        Personalizer,
        PersonalizeSettings,
        ResumeMismatchError,
    )

    other = real_clip_head(tmp_path / "other.mp4", 20, source=short_clip)
    out = tmp_path / "m"
    Personalizer(short_clip, out, PersonalizeSettings(init="none")).claim_work_folder()
    (out / ".personalize" / "data.npz").write_bytes(b"a's data")  # as a stopped run has
    recorded = json.loads((out / ".personalize" / "inputs.json").read_text())
    assert recorded["clip"]["name"] == "face.mp4" and len(recorded["clip"]["sha256"]) == 64
    with pytest.raises(ResumeMismatchError, match="another clip .*--restart"):
        Personalizer(other, out, PersonalizeSettings(init="none")).run()
    with pytest.raises(ResumeMismatchError, match="other settings .resolution 64 → 128"):
        Personalizer(short_clip, out, PersonalizeSettings(init="none", resolution=128)).run()
    # another device does not change what is built: the run is resumable there
    Personalizer(short_clip, out, PersonalizeSettings(init="none", device="cuda:0")
                 ).claim_work_folder()
    assert (out / ".personalize" / "data.npz").read_bytes() == b"a's data"

    result = _vidinv("personalize", str(other), "-o", "m", "--init", "none", cwd=tmp_path)
    lines = _error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "another clip ('face.mp4')" in lines[0] and "--restart" in lines[0]
    assert (out / ".personalize" / "data.npz").read_bytes() == b"a's data"
    # same name, other content: still another clip
    renamed = tmp_path / "b" / "face.mp4"
    renamed.parent.mkdir()
    renamed.write_bytes(other.read_bytes())
    assert "other content" in _error_lines(_vidinv(
        "personalize", str(renamed), "-o", "m", "--init", "none", cwd=tmp_path))[0]

    # --restart discards the stopped run (here the new clip is then refused: no face), and
    # the folder that held it stays
    no_face = make_video(tmp_path / "noface.mp4", n_frames=30, size=(96, 64)).path
    result = _vidinv("personalize", str(no_face), "-o", "m", "--restart", cwd=tmp_path)
    assert result.returncode == 2 and "no face" in _error_lines(result)[0]
    assert out.is_dir() and not (out / ".personalize").exists()


def test_a_refused_clip_leaves_a_folder_the_user_made(tmp_path):
    """An empty -o folder that existed before stays when the clip is refused; one the run
    made is removed."""
    no_face = make_video(tmp_path / "noface.mp4", n_frames=30, size=(96, 64)).path
    (tmp_path / "mine").mkdir()
    for name in ("mine", "new"):
        result = _vidinv("personalize", str(no_face), "-o", name, cwd=tmp_path)
        assert result.returncode == 2 and "no face" in _error_lines(result)[0]
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())
    assert not (tmp_path / "new").exists()
