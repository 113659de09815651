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
