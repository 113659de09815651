"""``vidinv bench``: RAVDESS discovery and sampling, end-to-end runs, resuming, comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.media import real_clip_path
from tests.model_fixtures import make_tiny_model
from vidinv.cli import build_parser, main
from vidinv.errors import InputFileError
from vidinv.evaluate.ravdess import discover, find_videos, parse_ravdess_name, sample

CLIP_FRAMES = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first 16 frames of the real clip."""
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    reader = VideoReader(real_clip_path())
    with VideoWriter(path, reader.info, crf=12, preset="ultrafast") as writer:
        for frame in reader:
            if frame.index >= CLIP_FRAMES:
                break
            writer.write(frame)
    return path


# --- RAVDESS names -----------------------------------------------------------------------------


def test_ravdess_names_are_validated():
    video = parse_ravdess_name("Actor_07/02-01-05-02-01-02-07.mp4")
    assert video is not None and video.actor == 7 and video.emotion_name == "angry"
    assert video.meta()["modality"] == "video-only" and video.meta()["intensity"] == "strong"
    for bad in ("03-01-05-02-01-02-07.wav",  # audio-only
                "03-01-05-02-01-02-07.mp4",  # modality 03 is audio-only
                "01-01-09-01-01-01-01.mp4",  # no emotion 09
                "01-01-01-02-01-01-01.mp4",  # neutral has no strong intensity
                "01-02-07-01-01-01-01.mp4",  # song has no disgust
                "01-01-03-01-01-01-25.mp4",  # actors 01–24
                "Actor_02/01-01-03-01-01-01-01.mp4",  # folder of another actor
                "01-01-03-01-01-01.mp4", "clip.mp4"):
        assert parse_ravdess_name(bad) is None, bad


def test_discovery_skips_other_files_keeps_one_file_per_recording(tmp_path):
    names = ["Actor_01/01-01-03-01-01-01-01.mp4", "Actor_01/02-01-03-01-01-01-01.mp4",
             "Actor_01/01-01-04-01-01-01-01.mp4", "Actor_02/02-02-06-02-02-02-02.mp4",
             "Actor_02/01-01-03-01-01-01-01.mp4", "Actor_02/notes.mp4", "Actor_02/x.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = discover(tmp_path)
    assert [v.path.relative_to(tmp_path).as_posix() for v in found] == [
        "Actor_01/02-01-03-01-01-01-01.mp4",  # the video-only file of the pair
        "Actor_01/01-01-04-01-01-01-01.mp4",
        "Actor_02/02-02-06-02-02-02-02.mp4"]
    assert len(discover(tmp_path, "full-av")) == 2
    assert sample(found, 2, seed=3) == sample(list(reversed(found)), 2, seed=3)
    assert len({tuple(v.path for v in sample(found, 2, seed=s)) for s in range(10)}) > 1
    assert sample(found, 10) == found
    with pytest.raises(InputFileError, match="no RAVDESS videos"):
        find_videos(_empty(tmp_path), 2)
    with pytest.raises(InputFileError, match="no such folder"):
        discover(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory, short_clip) -> Path:
    root = tmp_path_factory.mktemp("ravdess")
    for name in ("Actor_01/01-01-03-01-01-01-01.mp4", "Actor_02/02-01-04-02-01-02-02.mp4",
                 "Actor_02/interview.mp4"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(short_clip.read_bytes())
    return root


def test_bench_ravdess_end_to_end_and_resume(ravdess_root, model, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "ravdess", "--root", str(ravdess_root), "--n", "2", "--model", str(model),
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RAVDESS: 2 videos" in printed
    for title in ("SSIM ↑", "PSNR ↑", "MSE ↓", "LPIPS ↓", "ID dist ↓", "same ↑", "TL-ID ↑",
                  "TG-ID ↑"):
        assert title in printed
    assert "dlib_face_recognition_resnet_model_v1 (128-d)" in printed

    variant = out / "smooth-centred_batch-4"
    stems = ["01-01-03-01-01-01-01", "02-01-04-02-01-02-02"]
    for stem in stems:
        record = json.loads((variant / "videos" / f"{stem}.json").read_text())
        assert record["status"] == "ok" and record["summary"]["frames"] == CLIP_FRAMES
        assert record["summary"]["lpips"] is None  # no weights: n/a, never approximated
        assert record["settings"]["identity_embedding"].startswith("dlib_face_recognition")
        summary = record["summary"]
        assert summary["id_distance"] > 0 and 0 <= summary["id_same"] <= 1
        assert 0 <= summary["id_similarity"] <= 1 and 0 < summary["id_cosine"] <= 1
        assert summary["tl_id"] >= 0 and summary["tl_id_cosine"] > 0
        lines = (variant / "videos" / f"{stem}.csv").read_text().splitlines()
        assert len(lines) == CLIP_FRAMES + 1 and lines[0].startswith("frame,face,crop_ssim")
    assert json.loads((variant / "videos" / f"{stems[1]}.json").read_text())["actor"] == 2
    summary = json.loads((variant / "summary.json").read_text())
    assert summary["aggregate"]["videos"] == 2 and summary["aggregate"]["frames"] == 32
    assert (variant / "summary.csv").read_text().splitlines()[-1].startswith("mean,")
    assert (variant / "per_frame.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "TL-ID" in (out / "table.txt").read_text()
    assert (out / "comparison.csv").is_file()

    # a second run skips the finished videos (their JSON stays as it was)
    before = {stem: (variant / "videos" / f"{stem}.json").stat().st_mtime_ns for stem in stems}
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier, skipped") == 2
    assert {stem: (variant / "videos" / f"{stem}.json").stat().st_mtime_ns
            for stem in stems} == before
    first_table = printed[printed.index("Method"):]
    assert again[again.index("Method"):] == first_table


def test_bench_clip_compares_batching_side_by_side(short_clip, model, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["bench", "clip", str(short_clip), "--model", str(model), "--out", str(out),
                 "--compare", "batching", "--smooth", "none", "--no-id", "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("Method"):]
    assert "smooth-none_batch-1" in table and "smooth-none_batch-4" in table
    comparison = json.loads((out / "comparison.json").read_text())["variants"]
    one, four = comparison["smooth-none_batch-1"], comparison["smooth-none_batch-4"]
    # batching changes the speed, not the result
    assert math.isclose(one["crop_psnr"], four["crop_psnr"], abs_tol=1e-3)
    assert math.isclose(one["crop_ssim"], four["crop_ssim"], abs_tol=1e-4)
    assert one["id_distance"] is None and one["tl_id"] is None  # --no-id


def test_bench_clip_compares_smoothing_off_and_on(short_clip, model, tmp_path, capsys):
    out = tmp_path / "smooth"
    assert main(["bench", "clip", str(short_clip), "--model", str(model), "--out", str(out),
                 "--compare", "smoothing", "--no-id", "--quiet"]) == 0
    table = capsys.readouterr().out
    table = table[table.index("Method"):]
    assert "smooth-none_batch-4" in table and "smooth-centred_batch-4" in table
    variants = json.loads((out / "comparison.json").read_text())["variants"]
    off, on = variants["smooth-none_batch-4"], variants["smooth-centred_batch-4"]
    assert on["crop_jitter"] < off["crop_jitter"]
    assert on["latent_jitter"] < off["latent_jitter"]


def test_bench_clip_measures_an_edit(short_clip, model, tmp_path, capsys):
    out = tmp_path / "edit"
    common = [str(short_clip), "--model", str(model), "--out", str(out), "--smooth", "none",
              "--no-id", "--quiet"]
    assert main(["bench", "clip", *common]) == 0
    assert main(["bench", "clip", *common, "--edit", "smile", "--strength", "3"]) == 0
    capsys.readouterr()
    inverted = json.loads((out / "smooth-none_batch-4" / "summary.json").read_text())
    edited = json.loads((out / "smooth-none_batch-4_edit-smile+3" / "summary.json").read_text())
    assert edited["aggregate"]["frames"] == inverted["aggregate"]["frames"] == CLIP_FRAMES
    assert edited["aggregate"]["crop_mse"] != inverted["aggregate"]["crop_mse"]


def test_bench_user_errors_are_one_line(tmp_path, model, capsys):
    assert main(["bench", "ravdess", "--root", str(tmp_path), "--model", str(model)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no RAVDESS videos" in error[0]
    assert main(["bench", "clip", str(tmp_path / "none.mp4"), "--model", str(model)]) == 2
    assert "no such video file" in capsys.readouterr().err


def test_bench_parser_is_registered():
    args = build_parser().parse_args(["bench", "ravdess", "--root", "R", "--compare",
                                      "smoothing", "--edit", "smile"])
    assert args.n == 120 and args.seed == 0 and args.compare == "smoothing"
    assert args.edit == "smile" and callable(args.handler)
