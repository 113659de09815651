"""An independent smile measurement and a sharpness measurement, for judging edits.

:class:`DlibSmileMeter` uses dlib's 68-point shape predictor (``face_recognition_models``), a
landmark model that nothing in vidinv trains or fits against: the edit directions of
``vidinv personalize`` come from MediaPipe-landmark warps and the InterFaceGAN scorers use
MediaPipe too. Its score is (mouth width + corner lift) / inter-ocular distance, where the
width is the distance of the outer mouth corners (points 48, 54), the lift is how far the
corners sit above the mean height of the lips' centre points (51, 57), and the inter-ocular
distance is between the outer eye corners (36, 45). A smile widens the mouth and lifts its
corners, so the score rises; a neutral face scores about 0.6.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from vidinv.metrics.identity import face_recognition_model_file

SHAPE_68_FILE = "shape_predictor_68_face_landmarks.dat"


class DlibSmileMeter:
    """``score(image)`` -> the smile score of the largest face, or None where dlib finds none.

    ``box`` (x0, y0, x1, y1) in image pixels skips detection (for aligned crops, whose face box
    is known); images are enlarged so the face is at least ``min_face`` px wide.
    """

    def __init__(self, min_face: int = 160) -> None:
        self.min_face = int(min_face)
        self._detector: Any = None
        self._shape: Any = None

    def _load(self) -> None:
        if self._shape is None:
            import dlib

            self._dlib = dlib
            self._detector = dlib.get_frontal_face_detector()
            self._shape = dlib.shape_predictor(str(face_recognition_model_file(SHAPE_68_FILE)))

    def points(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None
               ) -> np.ndarray | None:
        """[68,2] float (x, y) in ``image`` pixels, or None."""
        self._load()
        dlib = self._dlib
        if box is not None:
            factor = max(1.0, self.min_face / max(box[2] - box[0], 1.0))
        else:
            factor = max(1.0, 2 * self.min_face / max(min(image.shape[:2]), 1))
        work = image if factor == 1.0 else cv2.resize(image, None, fx=factor, fy=factor,
                                                      interpolation=cv2.INTER_CUBIC)
        work = np.ascontiguousarray(work)
        if box is None:
            rects = self._detector(work, 1)
            if len(rects) == 0:
                return None
            rect = max(rects, key=lambda r: r.area())
        else:
            rect = dlib.rectangle(*(int(round(v * factor)) for v in box))
        shape = self._shape(work, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64) / factor

    def score(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None
              ) -> float | None:
        points = self.points(image, box)
        return None if points is None else smile_from_points(points)


def smile_from_points(points: np.ndarray) -> float:
    """(mouth width + corner lift) / inter-ocular distance of dlib's 68 points [68,2]."""
    interocular = float(np.linalg.norm(points[45] - points[36]))
    corners = points[[48, 54]]
    width = float(np.linalg.norm(corners[1] - corners[0]))
    lift = float(points[[51, 57], 1].mean() - corners[:, 1].mean())
    return (width + lift) / max(interocular, 1e-6)


def laplacian_variance(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    """Variance of the Laplacian of the grey image inside ``box`` (x0, y0, x1, y1): sharpness."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if box is not None:
        x0, y0, x1, y1 = box
        grey = grey[max(0, y0):y1, max(0, x0):x1]
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


#: What :func:`landmark_measures` returns, each in inter-ocular units (eye centre to eye centre).
MEASURES = ("corner_rise", "mouth_width", "lip_gap", "lower_lid", "eye_opening", "brow",
            "brow_gap", "iris_x", "iris_y", "nose_x", "nose_y", "tilt")


def landmark_measures(image: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """Expression measures from dlib's 68 points [68,2] of ``image`` [H,W,3] uint8 RGB, in
    inter-ocular units (distance of the eyes' centres), image y down:

    - ``corner_rise``: how far the mouth corners (48, 54) sit above the mouth's centre (the
      mean of 51, 57, 62, 66) — a smile raises it; ``mouth_width`` (48–54); ``lip_gap``
      (62–66);
    - ``lower_lid``: the lower lids' height (40, 41, 46, 47) above the eye corners' line
      (a smile's AU6 and eye narrowing raise it); ``eye_opening``: upper to lower lid;
    - ``brow``: the brows' height above the eyes' centres; ``brow_gap``: inner brow ends (21–22);
    - ``iris_x`` / ``iris_y``: the iris centre (the darkness-weighted centroid inside each eye's
      outline) relative to the eye's centre, mean of both eyes;
    - ``nose_x`` / ``nose_y``: the nose tip (30) relative to the eyes' midpoint (head yaw and
      pitch); ``tilt``: the eye line's angle in radians (head roll).
    """
    p = np.asarray(points, np.float64)
    left, right = p[36:42].mean(0), p[42:48].mean(0)
    unit = max(float(np.linalg.norm(right - left)), 1e-6)
    mouth_centre = p[[51, 57, 62, 66]].mean(0)
    corners_line = 0.5 * (p[[36, 39]].mean(0) + p[[42, 45]].mean(0))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    irises = []
    for eye in (range(36, 42), range(42, 48)):
        outline = p[list(eye)]
        x0, y0 = np.floor(outline.min(0)).astype(int)
        x1, y1 = np.ceil(outline.max(0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
        centre = outline.mean(0)
        if x1 - x0 < 2 or y1 - y0 < 1:
            irises.append(np.zeros(2))
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(outline - [x0, y0]).astype(np.int32)], 1)
        patch = grey[y0:y1, x0:x1]
        inside = patch[mask > 0]
        if inside.size < 2:
            irises.append(np.zeros(2))
            continue
        weight = np.clip(np.percentile(inside, 70) - patch, 0, None) * (mask > 0)
        if weight.sum() <= 0:
            irises.append(np.zeros(2))
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        irises.append(np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
                      - centre)
    iris = np.mean(irises, 0) / unit
    nose = (p[30] - 0.5 * (left + right)) / unit
    eye_line = right - left
    return {"corner_rise": float(mouth_centre[1] - p[[48, 54], 1].mean()) / unit,
            "mouth_width": float(np.linalg.norm(p[54] - p[48])) / unit,
            "lip_gap": float(p[66, 1] - p[62, 1]) / unit,
            "lower_lid": float(corners_line[1] - p[[40, 41, 46, 47], 1].mean()) / unit,
            "eye_opening": float(p[[40, 41, 46, 47], 1].mean() - p[[37, 38, 43, 44], 1].mean())
            / unit,
            "brow": float(0.5 * (left[1] + right[1]) - p[17:27, 1].mean()) / unit,
            "brow_gap": float(np.linalg.norm(p[22] - p[21])) / unit,
            "iris_x": float(iris[0]), "iris_y": float(iris[1]),
            "nose_x": float(nose[0]), "nose_y": float(nose[1]),
            "tilt": float(np.arctan2(eye_line[1], eye_line[0]))}
