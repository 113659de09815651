"""`vidinv live` at 720p: shown fps against the camera's rate and the machine's bound.

    python benchmarks/live.py [--model FOLDER] [--seconds 20] [--fps 30]

A 1280×720 file camera at 30 fps (the real talking head upscaled ×5 onto a 720p canvas, looped)
feeds `live` with the realtime preset, the model's first three attributes applied at once,
and a sink that costs nothing (a null virtual camera: no window, no file), so what is measured
is the pipeline. Printed:

* shown fps against the camera rate, and the machine's bound min(1 / the slower of live's
  two stage threads, cores / Σ CPU of the stages and the camera's decoding), from each stage
  timed alone; shown ≤ min(both);
* median and max latency (capture → shown), also in camera frame intervals;
* each live stage's ms per frame at 720p (where the time goes);
* torch CPU threads: the realtime preset's ``engine.threads`` (1) unless ``--threads``;
* the cost of editing: edit + render per frame with 1 attribute against 3 (summed offsets);
* the page's preview update (`vidinv ui`): edit + render + paste of the cached frame.

The machine is shared with other work: the load average is printed with the numbers, and
they are only as steady as it is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.pipeline import model_folder, real_frames, upscale_720p, write_clip  # noqa: E402


class NullCamera:
    """A virtual camera that drops what it is sent (so the sink costs nothing)."""

    def __init__(self, width: int, height: int, fps: float, **kwargs) -> None:
        self.frames = 0

    def send(self, frame: np.ndarray) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


def stage_times(clip: Path, bundle, editor, n: int, overrides: list[str]
                ) -> tuple[dict[str, tuple[float, float]], list[list[str]], float]:
    """Each live stage on ``n`` frames, one after another in one thread: {name: (wall, CPU)
    ms per frame}; the live segments (stage names per thread); and the capture's decoding
    CPU ms per frame (the camera's own thread)."""
    from vidinv.config import load_preset
    from vidinv.pipeline.runner import chain
    from vidinv.pipeline.runtime import stage_runtime
    from vidinv.pipeline.wiring import build_pipeline, make_networks
    from vidinv.video.reader import VideoReader

    config = load_preset("realtime").with_overrides(overrides)
    networks = make_networks(bundle, config, editor)
    segments = build_pipeline(config, networks, "cam", live=True)
    stages = [stage for segment in segments for stage in segment]
    cpu_start = time.process_time()
    frames = [frame for _, frame in zip(range(n + 8), VideoReader(clip), strict=False)]
    decode_ms = (time.process_time() - cpu_start) / len(frames) * 1e3
    wall: dict[str, float] = {type(s).__name__: 0.0 for s in stages}
    cpu = dict(wall)

    def timed(stage, upstream):
        name = type(stage).__name__
        iterator = stage(upstream)
        while True:
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                frame = next(iterator)
            except StopIteration:
                return
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - cpu_start
            yield frame

    import dataclasses

    with stage_runtime(config.engine.threads):  # as `live` runs them
        list(chain(stages, iter(frames[:8])))  # warm-up
        copies = [dataclasses.replace(f) for f in frames[8:]]
        upstream = iter(copies)
        for stage in stages:
            upstream = timed(stage, upstream)
        count = sum(1 for _ in upstream)
    # Each stage's next() includes its upstream stages' time: subtract it.
    own: dict[str, tuple[float, float]] = {}
    running_wall = running_cpu = 0.0
    for name in wall:
        own[name] = ((wall[name] - running_wall) / count * 1e3,
                     (cpu[name] - running_cpu) / count * 1e3)
        running_wall, running_cpu = wall[name], cpu[name]
    names = [[type(stage).__name__ for stage in segment] for segment in segments]
    return own, names, decode_ms


def edit_cost(bundle, names: list[str], repeats: int) -> dict[str, float]:
    """Median ms of edit + render of one face with 1 attribute and with all of ``names``."""
    import torch

    from vidinv.config import EngineSettings
    from vidinv.engines.model_graphs import engines_for_bundle
    from vidinv.pipeline.attributes import resolve_edits

    edit_render = engines_for_bundle(bundle, EngineSettings(batch_size=1)).edit_render
    generator = bundle.generator
    w = generator.latent_avg.expand(1, generator.n_latent, generator.style_dim).clone()
    features = generator.features(w, bundle.k)
    out = {}
    for label, edits in (("1 attribute", {names[0]: 1.5}),
                         (f"{len(names)} attributes", {n: 1.0 for n in names})):
        editor = resolve_edits(bundle, edits)
        samples = []
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                edit_render(w, features, editor.offset[None])
                samples.append(time.perf_counter() - start)
        out[label] = statistics.median(samples[3:]) * 1e3
    return out


def preview_cost(model: Path, clip: Path | None, repeats: int) -> tuple[float, float, float]:
    """The page's preview: (open ms, median update ms, p90 update ms)."""
    import torch

    from vidinv.ui.session import UiSession

    torch.set_num_threads(1)  # as `vidinv ui` serves
    with tempfile.TemporaryDirectory() as folder:
        session = UiSession(Path(folder), default_model=str(model))
        if clip is None:
            opened_clip = session.add_bundled_clip()
        else:
            data = clip.read_bytes()
            import io

            opened_clip = session.add_upload(clip.name, io.BytesIO(data), len(data))
        start = time.perf_counter()
        opened = session.open(opened_clip.id, None)
        open_ms = (time.perf_counter() - start) * 1e3
        names = opened["attributes"][:3]
        samples = []
        for i in range(repeats):
            strengths = {name: ((i % 7) - 3) * 0.5 for name in names}
            start = time.perf_counter()
            session.preview(strengths)
            samples.append((time.perf_counter() - start) * 1e3)
        session.close()
    samples.sort()
    return open_ms, statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--skip-preview", action="store_true")
    parser.add_argument("--paste", choices=("transfer", "render"),
                        help="face.paste (default: the preset's)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: the realtime preset's engine.threads)")
    args = parser.parse_args()

    import torch

    from vidinv.config import load_preset
    from vidinv.pipeline.runtime import usable_cores

    threads = args.threads or load_preset("realtime").engine.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import available_attributes, resolve_edits
    from vidinv.pipeline.live import live
    from vidinv.video.sources import FileCameraSource

    with tempfile.TemporaryDirectory() as scratch:
        model, model_label = model_folder(args.model)
        bundle = load_model_bundle(model)
        names = sorted(available_attributes(bundle))
        names = [n for n in ("smile", "yaw", "mouth_open") if n in names] or names[:3]
        print(f"model: {model_label}; attributes applied: {', '.join(names)}; torch threads "
              f"{torch.get_num_threads()}")
        frames = [upscale_720p(image) for image in real_frames()]
        clip = write_clip(Path(scratch) / "cam720.mp4", frames, 240, fps=args.fps)

        print(f"[{_load()}]")
        editor = resolve_edits(bundle, {n: 1.0 for n in names})
        overrides = [f"face.paste={args.paste}"] if args.paste else []
        print(f"paste: {load_preset('realtime').with_overrides(overrides).face.paste}")
        per_stage, segments, decode_ms = stage_times(
            clip, bundle, editor, 60, [f"engine.threads={threads}", *overrides])
        print("live stages at 1280×720, ms per frame (wall/CPU): "
              + ", ".join(f"{name} {wall:.1f}/{cpu:.1f}" for name, (wall, cpu)
                          in per_stage.items() if cpu >= 0.05)
              + f"; the camera's decoding {decode_ms:.1f} CPU")
        threads_ms = [sum(per_stage[name][0] for name in names) for names in segments]
        total_cpu = sum(cpu for _, cpu in per_stage.values()) + decode_ms
        cores = usable_cores()  # the cores this run may use (its CPU affinity)
        bound = min(1000 / max(threads_ms), cores * 1000 / total_cpu)
        print(f"bound: min(1 / slowest live thread, {cores} cores / Σ CPU) = min(1000 / "
              f"max({', '.join(f'{ms:.1f}' for ms in threads_ms)}), {cores} × 1000 / "
              f"{total_cpu:.1f}) = {bound:.1f} fps")

        print(f"[{_load()}]")
        config = load_preset("realtime").with_overrides([f"engine.threads={threads}",
                                                         *overrides])
        # buffer 1: the newest frame only, as `vidinv live` reads a webcam (and a --source)
        report = live(FileCameraSource(clip, loop=True, buffer_size=1), bundle, config, editor,
                      max_seconds=args.seconds, show=False, virtual_camera=True,
                      camera_class=NullCamera)
        interval = 1000.0 / args.fps
        print(f"live 1280×720 file camera at {args.fps} fps: {report.fps:.1f} fps shown "
              f"({report.fps / args.fps:.2f} × the camera rate; machine bound {bound:.1f} fps, "
              f"so at most {min(bound, args.fps):.1f}), latency median "
              f"{report.latency_ms_median:.0f} ms ({report.latency_ms_median / interval:.1f} "
              f"frame intervals), max {report.latency_ms_max:.0f} ms, "
              f"{report.frames_dropped} frames dropped by the camera  [{_load()}]")

        costs = edit_cost(bundle, names, 60)
        print("edit + render per face (batch 1): "
              + ", ".join(f"{label} {ms:.1f} ms" for label, ms in costs.items()))

        if not args.skip_preview:
            for label, source in (("bundled 176×144 clip", None),
                                  ("1280×720 clip", clip)):
                open_ms, median, p90 = preview_cost(model, source, 30)
                print(f"ui preview ({label}): open {open_ms:.0f} ms, update median "
                      f"{median:.0f} ms, p90 {p90:.0f} ms  [{_load()}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
