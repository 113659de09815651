"""What the transfer paste costs against render paste, per frame, at 1280×720.

    python benchmarks/paste_cost.py [--frames 60] [--model FOLDER]

The real talking head upscaled ×5 onto a 720p canvas (as in benchmarks/pipeline.py), edited
with smile at strength 1 by the threaded `edit` pipeline in each paste mode, plus each stage
alone (the transfer mode also renders the reconstruction R in the same generator call, and its
paste estimates and applies the motion). Target: transfer ≤ 1.3 × render per frame.

Then the transfer's `EditTransfer.apply` alone, on the fields, masks and crop maps a real smile
edit of the clip gave it: ms/frame at the 720p face and with the frame enlarged ×1.5 (the 1080p
face, ~600 px), for this tree and for the `apply` of git revision ``--baseline`` (the one before
the stacked warp and banded resampling), and the PSNR of this tree's output against the
baseline's on the face box (`--apply-only` skips the pipeline runs).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import (  # noqa: E402
    model_folder,
    real_frames,
    run_edit,
    stage_rates,
    upscale_720p,
    write_clip,
)

from vidinv.face.paste import frame_box  # noqa: E402
from vidinv.face.transfer import EditTransfer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--model")
    parser.add_argument("--baseline", default="e93343a",
                        help="git revision whose EditTransfer.apply is the 'before'")
    parser.add_argument("--apply-only", action="store_true")
    args = parser.parse_args()
    model, name = model_folder(args.model)
    frames = [upscale_720p(image) for image in real_frames()[:40]]
    baseline = baseline_transfer(args.baseline)
    with tempfile.TemporaryDirectory() as folder:
        calls = recorded_applies(Path(folder), frames, model)
    print(f"EditTransfer.apply on {len(calls)} frames of a real smile edit "
          f"(before = {args.baseline})")
    for label, scale in (("720p", 1.0), ("1080p", 1.5)):
        scaled = [enlarged(call, scale) for call in calls]
        before = apply_ms(baseline.EditTransfer(), scaled)
        after = apply_ms(EditTransfer(), scaled)
        quality = min(face_psnr(baseline.EditTransfer(), EditTransfer(), call) for call in scaled)
        print(f"{label:<5} face ~{face_side(scaled[0])} px: before {before:.2f} ms/frame, "
              f"after {after:.2f} ms/frame ({before / after:.2f}×); face-box PSNR after vs "
              f"before ≥ {quality:.1f} dB")
    if args.apply_only:
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip720.mp4", frames, args.frames)
        print(f"{name}; {args.frames} frames of 1280×720; edit smile 1")
        for mode in ("render", "transfer"):
            overrides = (f"face.paste={mode}",)
            stages, _ = stage_rates(clip, model, "smile", min(24, args.frames), overrides)
            run = run_edit(clip, Path(folder) / f"{mode}.mp4", model, "smile", overrides)
            results[mode] = run
            shown = "  ".join(f"{key} {wall:.1f}/{cpu:.1f}"
                              for key, (wall, cpu) in stages.items())
            print(f"{mode:<9} stages alone (ms/frame, wall/CPU): {shown}")
            print(f"{mode:<9} threaded edit: {1e3 / run['fps']:.1f} ms/frame "
                  f"({run['fps']:.1f} fps), CPU {run['cpu_ms_per_frame']:.1f} ms/frame")
    ratio = results["render"]["fps"] / results["transfer"]["fps"]
    cpu = results["transfer"]["cpu_ms_per_frame"] / results["render"]["cpu_ms_per_frame"]
    print(f"transfer / render: {ratio:.2f}× wall time per frame, {cpu:.2f}× CPU per frame "
          "(target ≤ 1.3)")
    return 0


#: One recorded call: (frame [H,W,3] uint8, EditField, crop_from_frame 3×3, crop_size, mask
#: [U,U] float32, appearance).
Call = tuple


def baseline_transfer(revision: str) -> types.ModuleType:
    """vidinv/face/transfer.py as it was at git ``revision``, as a module."""
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(["git", "show", f"{revision}:vidinv/face/transfer.py"], cwd=root,
                           capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"cannot read the baseline transfer at {revision!r}: "
                         f"{shown.stderr.strip()} (pass --baseline REV)")
    module = types.ModuleType(f"transfer_at_{revision}")
    exec(compile(shown.stdout, f"{revision}:vidinv/face/transfer.py", "exec"), module.__dict__)
    return module


def recorded_applies(folder: Path, frames: list[np.ndarray], model: Path) -> list[Call]:
    """The arguments of every EditTransfer.apply in a 12-frame smile edit of ``frames``."""
    calls: list[Call] = []
    original = EditTransfer.apply

    def record(self, image, field, crop_from_frame, crop_size, mask, out=None, appearance=1.0):
        calls.append((image.copy(), field, crop_from_frame.copy(), crop_size, mask.copy(),
                      appearance))
        return original(self, image, field, crop_from_frame, crop_size, mask, out=out,
                        appearance=appearance)

    clip = write_clip(folder / "apply.mp4", frames, 12)
    EditTransfer.apply = record
    try:
        run_edit(clip, folder / "apply_out.mp4", model, "smile", ("face.paste=transfer",))
    finally:
        EditTransfer.apply = original
    return calls


def enlarged(call: Call, scale: float) -> Call:
    """``call`` on its frame enlarged ×``scale`` (the face with it)."""
    image, field, crop_from_frame, crop_size, mask, appearance = call
    if scale == 1.0:
        return call
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return (image, field, crop_from_frame @ np.diag([1 / scale, 1 / scale, 1.0]), crop_size,
            mask, appearance)


def run_apply(transfer, call: Call) -> np.ndarray:
    image, field, crop_from_frame, crop_size, mask, appearance = call
    return transfer.apply(image, field, crop_from_frame, crop_size, mask, appearance=appearance)


def apply_ms(transfer, calls: list[Call], repeats: int = 5) -> float:
    """Best of ``repeats`` passes over ``calls``, ms per call (shared cores: the best is the
    cost, the rest is waiting)."""
    run_apply(transfer, calls[0])
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for call in calls:
            run_apply(transfer, call)
        best = min(best, (time.perf_counter() - start) / len(calls))
    return best * 1e3


def face_box(call: Call) -> tuple[int, int, int, int]:
    image, _, crop_from_frame, crop_size, mask, _ = call
    size = mask.shape[0]
    box = frame_box(mask, np.diag([size / crop_size, size / crop_size, 1.0]) @ crop_from_frame,
                    image.shape)
    return box if box is not None else (0, 0, image.shape[1], image.shape[0])


def face_side(call: Call) -> int:
    x0, y0, x1, y1 = face_box(call)
    return max(x1 - x0, y1 - y0)


def face_psnr(before, after, call: Call) -> float:
    """PSNR (dB) of ``after``'s output against ``before``'s on the face box of ``call``."""
    x0, y0, x1, y1 = face_box(call)
    old = run_apply(before, call)[y0:y1, x0:x1].astype(np.float64)
    new = run_apply(after, call)[y0:y1, x0:x1].astype(np.float64)
    error = float(np.mean((old - new) ** 2))
    return math.inf if error == 0 else 10 * math.log10(255.0 ** 2 / error)


if __name__ == "__main__":
    sys.exit(main())
