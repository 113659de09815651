"""What the transfer paste costs against render paste, per frame, at 1280×720.

    python benchmarks/paste_cost.py [--frames 60] [--model FOLDER]

The real talking head upscaled ×5 onto a 720p canvas (as in benchmarks/pipeline.py), edited
with smile at strength 1 by the threaded `edit` pipeline in each paste mode, plus each stage
alone (the transfer mode also renders the reconstruction R in the same generator call, and its
paste estimates and applies the motion). Target: transfer ≤ 1.3 × render per frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import (  # noqa: E402
    model_folder,
    real_frames,
    run_edit,
    stage_rates,
    upscale_720p,
    write_clip,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--model")
    args = parser.parse_args()
    model, name = model_folder(args.model)
    frames = [upscale_720p(image) for image in real_frames()[:40]]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip720.mp4", frames, args.frames)
        print(f"{name}; {args.frames} frames of 1280×720; edit smile 1")
        for mode in ("render", "transfer"):
            overrides = (f"face.paste={mode}",)
            stages, _ = stage_rates(clip, model, "smile", min(24, args.frames), overrides)
            run = run_edit(clip, Path(folder) / f"{mode}.mp4", model, "smile", overrides)
            results[mode] = run
            shown = "  ".join(f"{key} {value:.1f}" for key, value in stages.items())
            print(f"{mode:<9} stages alone (ms/frame): {shown}")
            print(f"{mode:<9} threaded edit: {1e3 / run['fps']:.1f} ms/frame "
                  f"({run['fps']:.1f} fps), CPU {run['cpu_ms_per_frame']:.1f} ms/frame")
    ratio = results["render"]["fps"] / results["transfer"]["fps"]
    cpu = results["transfer"]["cpu_ms_per_frame"] / results["render"]["cpu_ms_per_frame"]
    print(f"transfer / render: {ratio:.2f}× wall time per frame, {cpu:.2f}× CPU per frame "
          "(target ≤ 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
