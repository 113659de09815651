"""Training data for ``vidinv personalize``: a clip's aligned faces and expression warps of them.

:func:`collect_faces` aligns every frame of a clip (the pipeline's own face stages) and checks
that the clip is usable before any training; :func:`expression_set` turns the training crops
into a set in which the expressions of :mod:`~vidinv.personalize.warps` actually vary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidinv.errors import VidinvError
from vidinv.face.appearance import find_mouth_inside
from vidinv.face.expressions import AMOUNT_RANGE, WARPS
from vidinv.face.identities import FaceChoice
from vidinv.frame import MESH_POINTS
from vidinv.personalize.warps import warp_face

#: Fewer usable face frames than this cannot train a model.
MIN_FACE_FRAMES = 24
#: Frames sampled to look for a second person.
PEOPLE_SAMPLES = 8
#: Faces looked for per frame when one person of several is picked.
MAX_PEOPLE = 8


class PersonalizeInputError(VidinvError):
    """The clip cannot train a personal model (no face, too short, several people)."""


@dataclass
class ClipFaces:
    """The aligned faces of a clip.

    ``crops`` [N,S,S,3] uint8 RGB, ``points`` [N,478,2] float (MediaPipe mesh in crop pixels,
    found again on the crop, with the refined iris points 468–477), ``indices`` the frame
    index of each crop; ``heldout`` marks the crops kept out of training.
    """

    crops: np.ndarray
    points: np.ndarray
    indices: np.ndarray
    heldout: np.ndarray
    frame_count: int

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        keep = ~self.heldout
        return self.crops[keep], self.points[keep]


def _count_people(clip: Path, frame_count: int) -> int:
    """The most faces MediaPipe's detector sees in any of a few frames spread over the clip."""
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.video.reader import VideoReader

    wanted = set(np.linspace(0, max(frame_count - 1, 0), PEOPLE_SAMPLES).round().astype(int))
    most = 0
    with MediaPipeLandmarks(max_faces=4) as detector:
        for frame in VideoReader(clip):
            if frame.index in wanted:
                most = max(most, len(detector.detect(frame.image)))
    return most


def collect_faces(clip: str | Path, crop_size: int, heldout: range | None = None,
                  choice: FaceChoice | None = None) -> ClipFaces:
    """Align every frame of ``clip`` to ``crop_size``; one-line errors for unusable clips.

    ``choice`` (a reference photo's descriptor, or an index from the left) picks one person of
    a clip with several, followed as an identity; without it the clip must show one person.
    """
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.pipeline.runner import chain
    from vidinv.stages.face import AlignFace, DetectLandmarks, SmoothCrop, TrackFace
    from vidinv.video.reader import VideoReader

    clip = Path(clip)
    reader = VideoReader(clip)  # missing / corrupt files fail here, before anything else
    crops, indices, frame_count = [], [], 0
    one_of_several = choice is not None and choice.multi
    if one_of_several and choice.mode == "all":
        raise PersonalizeInputError("--face all: personalize learns one person; pass --face N "
                                    "or --face-ref PHOTO")
    detect = (DetectLandmarks("mediapipe", mode="tracking", max_faces=MAX_PEOPLE,
                              redetect_every=5) if one_of_several
              else DetectLandmarks("mediapipe"))
    stages = [detect, TrackFace(choice=choice, max_gap=0), SmoothCrop("centred"),
              AlignFace(crop_size)]
    for frame in chain(stages, reader):
        frame_count += 1
        if frame.face_found and frame.aligned is not None:
            crops.append(frame.aligned)
            indices.append(frame.index)
    if not crops:
        raise PersonalizeInputError(f"{clip}: no face found in any frame; personalize needs a "
                                    "clip of one person's face, front-on")
    if len(crops) < MIN_FACE_FRAMES:
        raise PersonalizeInputError(
            f"{clip}: a face in only {len(crops)} of {frame_count} frames; personalize needs at "
            f"least {MIN_FACE_FRAMES} (a clip of a few seconds)")
    people = 1 if one_of_several else _count_people(clip, frame_count)
    if people > 1:
        raise PersonalizeInputError(f"{clip}: {people} people in view; personalize learns one "
                                    "face: pass --face-ref PHOTO (or --face N) to pick the "
                                    "person, or crop the clip to them")
    points, keep = [], []
    with MediaPipeLandmarks() as detector:
        for i, crop in enumerate(crops):
            faces = detector.detect(crop)
            if faces:
                points.append(faces[0].points[:MESH_POINTS].astype(np.float64))
                keep.append(i)
    crops_array = np.stack([crops[i] for i in keep])
    points = list(with_irises(crops_array, np.stack(points)))
    index_array = np.array([indices[i] for i in keep])
    held = (np.isin(index_array, list(heldout)) if heldout is not None
            else np.zeros(len(keep), bool))
    if (~held).sum() < MIN_FACE_FRAMES:
        raise PersonalizeInputError(f"{clip}: only {(~held).sum()} usable training frames after "
                                    f"holding some out; need {MIN_FACE_FRAMES}")
    return ClipFaces(crops=crops_array, points=np.stack(points), indices=index_array,
                     heldout=held, frame_count=frame_count)


def with_irises(crops: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[N,478,2]: ``points`` [N,468,2] with MediaPipe's refined iris points (468–477, found by
    Face Mesh with ``refine_landmarks=True`` on each crop enlarged to 256 px); where it finds
    no face, each eye's centre and a ring of a fifth of the eye's width around it."""
    import cv2

    from vidinv.face.expressions import EYE_CORNERS, eye_centres
    from vidinv.face.landmarks import _import_mediapipe

    side = 256
    out = np.concatenate([points, np.zeros((len(points), 10, 2))], 1)
    mesh = _import_mediapipe().face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                  refine_landmarks=True)
    ring = np.array([[1, 0], [0, -1], [-1, 0], [0, 1]], np.float64)
    try:
        for n, (crop, face) in enumerate(zip(crops, points, strict=True)):
            scale = crop.shape[0] / side
            found = mesh.process(cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC))
            if found.multi_face_landmarks:
                marks = found.multi_face_landmarks[0].landmark
                out[n, MESH_POINTS:] = [[marks[i].x * side * scale, marks[i].y * side * scale]
                                for i in range(468, 478)]
                continue
            for k, centre in enumerate(eye_centres(face)):
                width = np.linalg.norm(face[EYE_CORNERS[2 * k + 1]] - face[EYE_CORNERS[2 * k]])
                out[n, 468 + 5 * k] = centre
                out[n, 469 + 5 * k:473 + 5 * k] = centre + 0.2 * width * ring
    finally:
        mesh.close()
    return out


def jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small random similarity transform (±2 % shift, ±4 % scale, ±3°) of a square crop."""
    import cv2

    size = image.shape[0]
    angle = rng.uniform(-3, 3)
    scale = rng.uniform(0.96, 1.04)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.02, 0.02, size=2) * size
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def expression_set(crops: np.ndarray, points: np.ndarray, copies: int = 1,
                   seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Training images: each crop as it is, jittered, and ``copies`` random warps of each kind
    (the FACS set of :mod:`~vidinv.personalize.warps`; amounts drawn over each warp's range,
    smile and mouth sometimes together; teeth from the clip's own open mouth where it has one).
    Returns ([M,S,S,3] uint8, a label per image)."""
    rng = np.random.default_rng(seed)
    inside = find_mouth_inside(crops, points)
    images, labels = [], []
    for crop, face in zip(crops, points, strict=True):
        images += [crop, jitter(crop, rng)]
        labels += ["original", "jitter"]
        for _ in range(copies):
            for kind in WARPS:
                low, high = AMOUNT_RANGE[kind]
                warped = warp_face(crop, face, kind, rng.uniform(low, high), inside)
                if kind == "smile" and rng.random() < 0.3:
                    warped = warp_face(warped, face, "mouth_open", rng.uniform(0, 0.6), inside)
                images.append(warped)
                labels.append(kind)
    return np.stack(images), labels
