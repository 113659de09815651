"""``vidinv personalize CLIP -o FOLDER``: train a model for the face in a clip."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vidinv.cli.options import add_face_options
from vidinv.errors import InputFileError, VidinvError

#: Share of the progress bar per stage (the budget's split, plus data and directions).
_BAR_SHARE = {"align": (0.0, 0.05), "generator": (0.05, 0.30), "encoder": (0.30, 0.55),
              "tune": (0.55, 0.97), "directions": (0.97, 1.0)}


def add_personalize_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "personalize", help="train a model for the face in a clip (no pretrained weights needed)",
        description="Align the clip's frames, add landmark-guided expression warps built on "
        "facial action units (smile, frown, brows_raised, eyes_closed, eyes_wide, mouth_open, "
        "pout, gaze_horizontal, gaze_vertical, yaw, pitch, roll), train a StyleGAN2 generator "
        "and a Feature-Style Encoder, then tune the generator and those directions (all but "
        "roll) together so the edits render those expressions (all within --minutes), add "
        "SeFa directions, and write a model folder with MODEL_CARD.md. Resumable: run the same "
        "command (same clip and settings) again after Ctrl-C; --restart starts over. Use "
        "the folder with `vidinv edit --model FOLDER`.")
    parser.add_argument("clip", help="a video of one person's face (a few seconds or more)")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="time budget for the whole build (default 30)")
    parser.add_argument("--resolution", type=int, default=64, choices=(64, 128, 256),
                        help="generator resolution (default 64; 128 needs about 4× the time)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--heldout", metavar="FIRST:LAST",
                        help="frame indices (inclusive) kept out of training, for the card's "
                        "held-out numbers")
    parser.add_argument("--init", default="default",
                        help="start from this model folder when it has the same shape: "
                        "'default' (the embedded model), 'none', or a folder")
    parser.add_argument("--split", metavar="G,E,T", default="0.2,0.2,0.5",
                        help="shares of the time for GAN training, encoder training and "
                        "expression tuning (default 0.2,0.2,0.5; the rest is data and "
                        "directions). 0 skips a step and keeps the --init model's network")
    add_face_options(parser)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for training (default 2; 1 is faster on a machine "
                        "that other jobs keep busy: two threads waiting on each other there "
                        "made a tuning step ten times slower)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the resumable training state (FOLDER/.personalize)")
    parser.add_argument("--restart", action="store_true",
                        help="discard a stopped run's training state in FOLDER and start over "
                        "(a resume must have the same clip and settings)")
    parser.set_defaults(handler=_personalize, io_reads=("clip", "--init", "--face-ref"),
                        io_folders=("--output",))
    return parser


def _heldout(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    first, sep, last = text.partition(":")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise VidinvError(f"--heldout {text!r}: write FIRST:LAST, e.g. 100:119") from None
    if not sep or low < 0 or high < low:
        raise VidinvError(f"--heldout {text!r}: write FIRST:LAST with 0 ≤ FIRST ≤ LAST")
    return low, high


def _split(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise VidinvError(f"--split {text!r}: write three numbers, e.g. 0.2,0.2,0.5") from None
    if len(values) != 3:
        raise VidinvError(f"--split {text!r}: write three numbers, e.g. 0.2,0.2,0.5")
    return values  # type: ignore[return-value]


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VidinvError("--device cuda: no CUDA device is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise VidinvError(f"--device {name!r}: use cpu or cuda")
    return name


def _check_paths(clip: Path, out: Path) -> None:
    from vidinv.personalize.build import WORK_FOLDER

    if not clip.is_file():
        raise InputFileError(f"{clip}: no such file; pass a video of one person's face")
    if out.exists() and not out.is_dir():
        raise InputFileError(f"{out}: exists and is not a folder; choose a new folder for the "
                             "model")
    if out.is_dir() and any(out.iterdir()) and not (out / WORK_FOLDER).is_dir():
        raise InputFileError(f"{out}: already holds files; choose a new folder (a stopped "
                             "personalize run is resumed in its own folder)")
    if out.resolve() == clip.resolve() or clip.resolve().is_relative_to(out.resolve()):
        raise InputFileError(f"{out}: holds the input clip; choose another folder")


def _check_face(settings) -> None:
    """One-line errors for --face / --face-ref before any work (the photo's face is found and
    described here; the data pass reuses it)."""
    from vidinv.face.identities import parse_face_choice

    if parse_face_choice(settings.face, settings.face_reference).mode == "all":
        raise VidinvError("--face all: personalize learns one person; pass --face N or "
                          "--face-ref PHOTO")


def _personalize(args: argparse.Namespace) -> int:
    import shutil

    from tqdm import tqdm

    from vidinv.personalize.build import (
        INPUTS_FILE,
        WORK_FOLDER,
        Personalizer,
        PersonalizeSettings,
        remove_work_folder,
    )
    from vidinv.personalize.evaluate import evaluate_model

    clip, out = Path(args.clip), Path(args.output)
    _check_paths(clip, out)
    # what this run may clean up on failure: only folders it makes itself
    made_out = not out.exists()
    made_work = args.restart or not (out / WORK_FOLDER).exists()
    settings = PersonalizeSettings(minutes=args.minutes, resolution=args.resolution,
                                   device=_device(args.device), heldout=_heldout(args.heldout),
                                   init=args.init, split=_split(args.split),
                                   face=args.face or "largest",
                                   face_reference=str(Path(args.face_ref).resolve())
                                   if args.face_ref else "",
                                   threads=args.threads)
    _check_face(settings)
    if settings.init not in ("default", "none") and not Path(settings.init).is_dir():
        raise InputFileError(f"--init {settings.init}: no such model folder; use 'default', "
                             "'none' or a folder")
    bar = tqdm(total=1000, unit="‰", bar_format="{desc} {percentage:3.0f}%|{bar}| "
               "{elapsed}<{remaining}", dynamic_ncols=True)

    def progress(stage: str, done: int, total: int) -> None:
        low, high = _BAR_SHARE.get(stage, (0.0, 1.0))
        position = int(1000 * (low + (high - low) * done / max(total, 1)))
        bar.set_description_str(f"personalize: {stage} {done}/{total}")
        bar.update(max(0, position - bar.n))

    if args.restart:
        remove_work_folder(out)
    builder = Personalizer(clip, out, settings, progress)
    try:
        builder.run(lambda g, e, d: evaluate_model(
            g, e, builder.last_directions, d["heldout_crops"]))
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; the training state is in {out}/.personalize: run the same command "
              "to continue")
        return 130
    except BaseException:
        bar.leave = False  # the error line follows on a clean line
        bar.close()
        # a run folder this run made and that holds nothing done yet (no step finished)
        # goes; a folder the user made, or a stopped run's, stays
        data = out / WORK_FOLDER
        if made_work and data.is_dir() and {p.name for p in data.iterdir()} <= {INPUTS_FILE}:
            shutil.rmtree(data, ignore_errors=True)
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    bar.close()
    if not args.keep_work:
        remove_work_folder(out)
    print(f"wrote {out} (MODEL_CARD.md has the numbers); edit with: vidinv edit CLIP --model "
          f"{out} --attr smile")
    return 0
