"""Faces: landmark backends, FFHQ alignment, crop smoothing and tracking, paste-back.

Importing this package loads no model: MediaPipe and dlib are imported on the first ``detect``.
"""

from vidinv.face.align import (
    CropQuad,
    align_face,
    align_from_quad,
    apply_transform,
    quad_from_landmarks,
    quad_from_points,
)
from vidinv.face.errors import (
    LandmarkBackendUnavailableError,
    NoFaceError,
    UnknownLandmarkBackendError,
)
from vidinv.face.landmarks import (
    DlibLandmarks,
    LandmarkDetector,
    MediaPipeLandmarks,
    create_landmark_detector,
)
from vidinv.face.paste import FacePaster, ellipse_mask, landmark_mask, paste_back
from vidinv.face.smoothing import (
    CentredGaussianWindow,
    EmaFilter,
    OneEuroFilter,
    centre_jitter,
    smooth_centred,
)
from vidinv.face.track import FaceTracker, bridge_gaps

__all__ = [
    "CentredGaussianWindow",
    "CropQuad",
    "DlibLandmarks",
    "EmaFilter",
    "FacePaster",
    "FaceTracker",
    "LandmarkBackendUnavailableError",
    "LandmarkDetector",
    "MediaPipeLandmarks",
    "NoFaceError",
    "OneEuroFilter",
    "UnknownLandmarkBackendError",
    "align_face",
    "align_from_quad",
    "apply_transform",
    "bridge_gaps",
    "centre_jitter",
    "create_landmark_detector",
    "ellipse_mask",
    "landmark_mask",
    "paste_back",
    "quad_from_landmarks",
    "quad_from_points",
    "smooth_centred",
]
