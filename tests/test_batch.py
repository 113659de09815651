"""``vidinv batch``: inputs and names, in-process and Ray runs, resuming, a killed worker.

Ray runs use one local Ray session per module (2 CPUs, no dashboard): starting Ray takes
seconds. Clips are pieces of the real clip (12 frames; 40 for the one whose worker is killed)
and a broken file; the model is the tiny random one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.media import real_clip_path
from tests.model_fixtures import make_tiny_model
from tests.skips import require
from vidinv.batch.files import (
    Task,
    check_no_overwrite,
    count_video_frames,
    expand_inputs,
    is_finished,
    partial_files,
    plan_outputs,
)
from vidinv.cli import main
from vidinv.errors import InputFileError

FRAMES = 12
LONG_FRAMES = 40


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _cut(path: Path, start: int, frames: int) -> Path:
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    reader = VideoReader(real_clip_path())
    with VideoWriter(path, reader.info, crf=12, preset="ultrafast") as writer:
        for frame in reader:
            if frame.index >= start + frames:
                break
            if frame.index >= start:
                writer.write(frame)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """in/a.mp4, in/sub/a.mp4 (same stem), in/broken.mp4 (an MP4 header and nothing else)."""
    root = tmp_path_factory.mktemp("clips") / "in"
    (root / "sub").mkdir(parents=True)
    _cut(root / "a.mp4", 0, FRAMES)
    _cut(root / "sub" / "a.mp4", 30, FRAMES)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    return root


@pytest.fixture(scope="module")
def ray_session():
    ray = require("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# --- inputs and names --------------------------------------------------------------------------


def test_inputs_from_files_folders_and_globs_with_unique_output_names(clips, tmp_path):
    a, sub_a, broken = clips / "a.mp4", clips / "sub" / "a.mp4", clips / "broken.mp4"
    (clips / "notes.txt").write_text("not a video")
    found = expand_inputs([str(clips)])
    assert found == sorted([a, sub_a, broken])
    # a file twice (directly and through a glob) is kept once, in first-seen order
    assert expand_inputs([str(sub_a), str(clips / "*.mp4")]) == [sub_a, a, broken]
    assert expand_inputs([str(clips / "**" / "a.mp4")]) == [a, sub_a]
    for missing, message in ((tmp_path / "none.mp4", "no such file"),
                             (tmp_path / "*.mkv", "matches no file")):
        with pytest.raises(InputFileError, match=message):
            expand_inputs([str(missing)])
    with pytest.raises(InputFileError, match="no video files"):
        expand_inputs([str(tmp_path)])

    outdir = tmp_path / "out"
    names = [p.name for p in plan_outputs([a, sub_a, broken], outdir, "_smile")]
    assert names == ["in-a_smile.mp4", "sub-a_smile.mp4", "broken_smile.mp4"]
    # same stem and same folder name: numbered, stable for the same inputs
    twin = tmp_path / "in" / "a.mp4"
    assert [p.name for p in plan_outputs([a, twin], outdir, "_inv")] == [
        "in-a_inv.mp4", "in-a-2_inv.mp4"]
    with pytest.raises(InputFileError, match="would overwrite the input"):
        check_no_overwrite([a], [clips / "a.mp4"])


def test_folder_and_glob_walks_do_not_follow_symlink_loops(clips, tmp_path):
    """``d/**`` over folders that link to themselves and to each other ends at once, and finds
    each real video once (linked folders are not entered)."""
    root = tmp_path / "d"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "v.mp4").write_bytes((clips / "a.mp4").read_bytes())
    (root / "x" / "y" / "loop").symlink_to(root)
    (root / "x" / "back").symlink_to(root / "x")
    (root / "self").symlink_to(root / "self")  # a dangling self-loop
    (root / "linked.mp4").symlink_to(clips / "a.mp4")  # a linked file is still a file
    started = time.monotonic()
    for pattern in (str(root / "**"), str(root / "**" / "*.mp4"), str(root)):
        found = expand_inputs([pattern])
        assert sorted(p.name for p in found) == ["linked.mp4", "v.mp4"], pattern
    assert time.monotonic() - started < 5


def test_the_output_folder_is_never_searched_for_inputs(clips, model, tmp_path, capsys):
    """``batch invert clips/ -o clips/out/``: the re-run takes the same two inputs, not its own
    outputs, and skips both."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes((clips / "a.mp4").read_bytes())
    out = folder / "out"
    args = ["batch", "invert", str(folder), "-o", str(out), "--model", str(model), "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_inv.mp4", "a_inv.mp4.vidinv.json", "b_inv.mp4", "b_inv.mp4.vidinv.json",
        "vidinv-batch.json"]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 videos")
    assert "a_inv: finished earlier, skipped" in printed
    assert "b_inv: finished earlier, skipped" in printed
    assert expand_inputs([str(folder / "**")], exclude=[out]) == [folder / "a.mp4",
                                                                 folder / "b.mp4"]
    with pytest.raises(InputFileError, match="outside the output folder"):
        expand_inputs([str(out)], exclude=[out])


def test_a_rerun_skips_only_an_exact_whole_match_and_says_why(clips, model, tmp_path, capsys):
    """The sidecar records input hash, settings, model, direction and version: another
    strength, another clip of the same length, another model, a cut output (100 bytes) or a
    missing record all redo the output, each with its reason on the video's line."""
    source = tmp_path / "in" / "v.mp4"
    source.parent.mkdir()
    source.write_bytes((clips / "a.mp4").read_bytes())
    out = tmp_path / "out"
    output = out / "v_smile.mp4"

    def run(*extra: str, model_folder: Path = model) -> str:
        code = main(["batch", "edit", str(source), "-o", str(out), "--attr", "smile",
                     "--model", str(model_folder), "--quiet", *extra])
        assert code == 0
        return capsys.readouterr().out

    run("--strength", "1")
    record = json.loads((out / "v_smile.mp4.vidinv.json").read_text())
    assert record["frames"] == FRAMES and record["output_size"] == output.stat().st_size
    assert len(record["made_by"]["input"]["sha256"]) == 64
    assert "finished earlier, skipped" in run("--strength", "1")
    assert "redone: it was made with other settings (strength 1.0 → 3.0)" in run(
        "--strength", "3")
    source.write_bytes((clips / "sub" / "a.mp4").read_bytes())  # another clip, same length
    assert count_video_frames(source) == FRAMES
    assert "redone: the input is not the one it was made from" in run("--strength", "3")
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert "redone: it was made with another model" in run("--strength", "3",
                                                          model_folder=other)
    output.write_bytes(output.read_bytes()[:-100])  # cut by 100 bytes
    assert "redone: the output is not the file that was written" in run(
        "--strength", "3", model_folder=other)
    assert "finished earlier, skipped" in run("--strength", "3", model_folder=other)
    # cut by 100 bytes and the record "fixed" to the new size: the frames must still decode
    sidecar = out / "v_smile.mp4.vidinv.json"
    output.write_bytes(output.read_bytes()[:-100])
    record = json.loads(sidecar.read_text())
    record["output_size"] = output.stat().st_size
    sidecar.write_text(json.dumps(record))
    printed = run("--strength", "3", model_folder=other)
    assert "redone: only" in printed or "redone: the output does not decode" in printed
    sidecar.unlink()
    assert "redone: no v_smile.mp4.vidinv.json says what made it" in run(
        "--strength", "3", model_folder=other)
    assert is_finished(output, source)


def test_finished_means_it_opens_with_the_input_frame_count(clips, tmp_path):
    a = clips / "a.mp4"
    assert count_video_frames(a) == FRAMES
    assert is_finished(a, a)
    short = _cut(tmp_path / "short.mp4", 0, FRAMES - 2)
    assert not is_finished(short, a)
    assert not is_finished(clips / "broken.mp4", a)
    assert not is_finished(tmp_path / "missing.mp4", a)
    out = tmp_path / "x_smile.mp4"
    leftover = tmp_path / ".x_smile.0123abcd.partial.mp4"
    leftover.write_bytes(b"")
    (tmp_path / ".x_smile.extra.0123abcd.partial.mp4").write_bytes(b"")  # another output's
    assert partial_files(out) == [leftover]


# --- in this process ---------------------------------------------------------------------------


def _records(report: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(report.read_text())["videos"]}


def test_batch_edit_reports_a_bad_video_goes_on_and_resumes(clips, model, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", "edit", str(clips / "a.mp4"), str(clips / "sub"), str(clips / "b*.mp4"),
            "-o", str(out), "--attr", "smile", "--model", str(model), "--quiet"]
    assert main(args) == 1  # a video failed
    printed = capsys.readouterr().out
    assert "broken_smile: failed:" in printed and "broken.mp4" in printed
    records = _records(out / "vidinv-batch.json")
    assert {name: r["status"] for name, r in records.items()} == {
        "in-a_smile": "ok", "sub-a_smile": "ok", "broken_smile": "failed"}
    for name in ("in-a_smile", "sub-a_smile"):
        assert records[name]["frames"] == FRAMES and records[name]["seconds"] > 0
        assert is_finished(out / f"{name}.mp4", Path(records[name]["input"]))
    assert not (out / "broken_smile.mp4").exists()
    assert not [p for p in out.iterdir() if ".partial" in p.name]

    # a re-run skips the finished outputs (untouched) and redoes an output that is not
    # complete (here: cut short by hand under the final name), saying why
    kept = (out / "in-a_smile.mp4").stat().st_mtime_ns
    damaged = out / "sub-a_smile.mp4"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "in-a_smile: finished earlier, skipped" in printed
    assert "sub-a_smile: 12 frames" in printed and "redone: the output is not the file" in printed
    records = _records(out / "vidinv-batch.json")
    assert records["in-a_smile"]["status"] == "skipped"
    assert records["sub-a_smile"]["status"] == "ok" and is_finished(damaged, clips / "sub" /
                                                                     "a.mp4")
    assert (out / "in-a_smile.mp4").stat().st_mtime_ns == kept


def test_batch_user_errors_are_one_line(clips, model, tmp_path, capsys, monkeypatch):
    def error_of(*argv: str) -> str:
        assert main(list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    common = ["-o", str(tmp_path / "o"), "--model", str(model), "--quiet"]
    assert "--attr" in error_of("batch", "edit", str(clips / "a.mp4"), *common)
    assert "none.mp4" in error_of("batch", "invert", str(tmp_path / "none.mp4"), *common)
    assert "not a Ray address" in error_of("batch", "invert", "--ray", str(clips / "a.mp4"),
                                           *common[:2], str(clips / "sub"))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert "vidinv[ray]" in error_of("batch", "invert", str(clips / "a.mp4"), *common,
                                     "--ray")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# --- on Ray ------------------------------------------------------------------------------------


def test_batch_invert_on_ray(ray_session, clips, model, tmp_path, capsys):
    out = tmp_path / "ray"
    assert main(["batch", "invert", str(clips), "-o", str(out), "--model", str(model),
                 "--quiet", "--ray", "--workers", "2"]) == 1
    capsys.readouterr()
    report = json.loads((out / "vidinv-batch.json").read_text())
    assert report["engine"].startswith("ray") and report["workers"] == 2
    records = {r["name"]: r for r in report["videos"]}
    assert {n: r["status"] for n, r in records.items()} == {
        "in-a_inv": "ok", "sub-a_inv": "ok", "broken_inv": "failed"}
    assert "broken.mp4" in records["broken_inv"]["error"]
    assert all(r["pid"] != os.getpid() for r in records.values())  # ran in the workers
    for name in ("in-a_inv", "sub-a_inv"):
        assert is_finished(out / f"{name}.mp4", Path(records[name]["input"]))
    assert ray_session.is_initialized()  # the session it found is left running


def test_gpus_per_task_needs_gpus_in_the_cluster(ray_session, model, clips, tmp_path, capsys):
    assert main(["batch", "invert", str(clips / "a.mp4"), "-o", str(tmp_path / "o"),
                 "--model", str(model), "--quiet", "--ray", "--gpus-per-task", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "has no GPU" in error[0]
    assert main(["batch", "invert", str(clips / "a.mp4"), "-o", str(tmp_path / "o"),
                 "--model", str(model), "--quiet", "--gpus-per-task", "1"]) == 2
    assert "--gpus-per-task is for --ray" in capsys.readouterr().err


def test_a_killed_worker_is_restarted_and_its_video_run_again(ray_session, clips, model,
                                                             tmp_path):
    from vidinv.batch.executor import RayExecutor
    from vidinv.batch.run import run_tasks
    from vidinv.batch.worker import PipelineJob
    from vidinv.config import PipelineConfig

    long_clip = _cut(tmp_path / "long.mp4", 0, LONG_FRAMES)
    inputs = [long_clip, clips / "broken.mp4", clips / "a.mp4"]
    out = tmp_path / "out"
    out.mkdir()
    tasks = [Task(name=o.stem, input=i, output=o)
             for i, o in zip(inputs, plan_outputs(inputs, out, "_inv"), strict=True)]
    victim = tasks[0]
    engine = RayExecutor(PipelineJob(model=str(model), config=PipelineConfig()), workers=2)
    engine.start(len(tasks))
    result: dict[str, object] = {}
    runner = threading.Thread(target=lambda: result.update(
        records=run_tasks(tasks, engine, progress=False)[0]))
    runner.start()
    killed_pid, killed_at = None, None
    deadline = time.monotonic() + 120
    while killed_pid is None and time.monotonic() < deadline and runner.is_alive():
        for status in engine.status():
            # mid-video: the worker runs it and its temporary output file exists
            if status["task"] == victim.name and partial_files(victim.output):
                killed_pid, killed_at = status["pid"], time.time()
                os.kill(status["pid"], signal.SIGKILL)
                break
        time.sleep(0.02)
    runner.join(timeout=300)
    assert killed_pid is not None, "never saw the long video running"
    assert not runner.is_alive()
    records = {r["name"]: r for r in result["records"]}
    assert records[victim.name]["status"] == "ok"
    assert records[victim.name]["frames"] == LONG_FRAMES
    assert records[victim.name]["pid"] != killed_pid  # finished by the restarted worker
    assert victim.output.stat().st_mtime > killed_at  # written after the kill: the retry
    assert is_finished(victim.output, long_clip)
    assert records[tasks[1].name]["status"] == "failed"
    assert records[tasks[2].name]["status"] == "ok"
    assert not [p for p in out.iterdir() if ".partial" in p.name]  # the killed try's is gone


# --- the benchmark on the same machinery -------------------------------------------------------


def test_bench_ravdess_on_ray_matches_in_process(ray_session, clips, model, tmp_path, capsys):
    root = tmp_path / "ravdess"
    for name, source in (("Actor_01/02-01-03-01-01-01-01.mp4", clips / "a.mp4"),
                         ("Actor_02/02-01-04-02-01-02-02.mp4", clips / "sub" / "a.mp4"),
                         ("Actor_03/02-01-05-02-01-02-03.mp4", clips / "broken.mp4")):
        (root / name).parent.mkdir(parents=True)
        (root / name).write_bytes(source.read_bytes())
    common = ["bench", "ravdess", "--root", str(root), "--n", "3", "--model", str(model),
              "--no-id", "--smooth", "none", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "02-01-05-02-01-02-03: failed" in printed  # the broken one, by name, on Ray too
    variant = "smooth-none_batch-4"
    local, on_ray = (json.loads((tmp_path / where / variant / "summary.json").read_text())
                     for where in ("local", "ray"))
    assert local["aggregate"]["videos"] == on_ray["aggregate"]["videos"] == 2
    assert local["aggregate"]["failed"] == on_ray["aggregate"]["failed"] == 1
    # the workers run one torch thread each, this process more: sums may differ in the last bits
    for key in ("crop_psnr", "crop_ssim", "crop_jitter", "frames"):
        assert on_ray["aggregate"][key] == pytest.approx(local["aggregate"][key], rel=1e-4)
    # a re-run on Ray finds every video finished (the failed one's record too)
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier, skipped") == 2
    assert "02-01-05-02-01-02-03: failed" in again and "(recorded earlier)" in again
