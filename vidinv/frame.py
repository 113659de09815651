"""The record every pipeline stage passes on: one video frame and what stages attached to it.

Conventions used across the package:

* images are ``numpy.ndarray`` [H,W,3] ``uint8`` RGB (never BGR outside OpenCV calls);
* points are float64 (x, y) pixel coordinates with the origin at the top-left pixel's corner;
* transforms are 3×3 float64 homogeneous matrices named ``<to>_from_<from>``, e.g.
  ``crop_from_frame`` maps frame pixels to aligned-crop pixels;
* network tensors are torch: ``w`` [L,512] float32, ``features`` [C,16,16] float32, images for
  the networks [3,H,W] float32 in [-1,1].
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


#: Points of MediaPipe's face mesh (with ``refine_landmarks`` ten iris points follow them).
MESH_POINTS = 468
#: Points of dlib's 68-point shape predictor.
DLIB_POINTS = 68


@dataclass(slots=True)
class FaceLandmarks:
    """The facial points FFHQ alignment needs, in one form for every landmark backend.

    ``eye_left``/``eye_right`` are the eye centres (the mean of each eye's contour points, as
    dlib's 6-point eyes give them) and ``mouth_left``/``mouth_right`` the outer mouth corners
    (dlib points 48 and 54). "Left" is the subject's right side, i.e. the left of the image.
    ``points`` keeps the backend's full set ([68,2] for dlib, [468,2] for MediaPipe) and
    ``box`` the face's bounding box (x0, y0, x1, y1) in frame pixels.
    """

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    points: np.ndarray
    box: tuple[float, float, float, float]
    backend: str
    score: float = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class CropQuad:
    """The oriented square crop of FFHQ alignment: centre ``c`` and half-axes ``x``, ``y``.

    All three are float64 (2,) vectors in frame pixels. ``x`` points to the image right of the
    face, ``y`` down the face; for quads from :func:`quad_from_landmarks` they are orthogonal
    and of equal length, after temporal smoothing nearly so (the crop stays an exact
    parallelogram, so every map below stays affine).
    """

    c: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def from_vector(cls, vector: np.ndarray | Sequence[float]) -> CropQuad:
        """Inverse of :meth:`to_vector`: (6,) = (cx, cy, xx, xy, yx, yy)."""
        v = np.asarray(vector, dtype=np.float64).reshape(6)
        return cls(v[0:2].copy(), v[2:4].copy(), v[4:6].copy())

    @classmethod
    def from_corners(cls, corners: np.ndarray) -> CropQuad:
        """From a [4,2] quad ordered NW, SW, SE, NE (``[c−x−y, c−x+y, c+x+y, c+x−y]``)."""
        q = np.asarray(corners, dtype=np.float64).reshape(4, 2)
        return cls(q.mean(axis=0), (q[3] - q[0]) / 2, (q[1] - q[0]) / 2)

    @classmethod
    def coerce(cls, quad: CropQuad | np.ndarray | Sequence) -> CropQuad:
        """Accept a CropQuad, a (c, x, y) triple, a (6,) vector or [4,2] corners."""
        if isinstance(quad, CropQuad):
            return quad
        if isinstance(quad, tuple | list) and len(quad) == 3:
            c, x, y = (np.asarray(v, dtype=np.float64).reshape(2) for v in quad)
            return cls(c, x, y)
        array = np.asarray(quad, dtype=np.float64)
        if array.size == 6:
            return cls.from_vector(array)
        if array.shape == (4, 2):
            return cls.from_corners(array)
        raise ValueError(f"expected a CropQuad, (c, x, y), a (6,) vector or [4,2] corners, "
                         f"got shape {array.shape}")

    def to_vector(self) -> np.ndarray:
        """(6,) float64 = (cx, cy, xx, xy, yx, yy), the form the smoothers filter."""
        return np.concatenate([self.c, self.x, self.y]).astype(np.float64)

    @property
    def corners(self) -> np.ndarray:
        """[4,2] float64: NW, SW, SE, NE = c−x−y, c−x+y, c+x+y, c+x−y."""
        c, x, y = self.c, self.x, self.y
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    @property
    def qsize(self) -> float:
        """Side of the crop in frame pixels, 2·|x|."""
        return float(np.hypot(*self.x) * 2.0)

    def frame_from_crop(self, size: int) -> np.ndarray:
        """3×3 float64: crop corner coordinates of an S×S crop → frame coordinates."""
        origin = self.c - self.x - self.y
        matrix = np.eye(3)
        matrix[:2, 0] = 2.0 * self.x / size
        matrix[:2, 1] = 2.0 * self.y / size
        matrix[:2, 2] = origin
        return matrix

    def crop_from_frame(self, size: int) -> np.ndarray:
        """3×3 float64: frame coordinates → crop corner coordinates of an S×S crop."""
        return np.linalg.inv(self.frame_from_crop(size))

    def lerp(self, other: CropQuad, t: float) -> CropQuad:
        """Linear interpolation of c, x and y: ``self`` at t = 0, ``other`` at t = 1."""
        return CropQuad.from_vector((1 - t) * self.to_vector() + t * other.to_vector())


#: The per-face fields of a :class:`FaceSlot`, which a :class:`Frame` also offers as its own
#: (those of its first slot) to code that handles one face.
SLOT_FIELDS = ("landmarks", "crop_quad", "crop_quad_raw", "bridged", "crop_from_frame",
               "crop_size", "aligned", "w", "features", "rendered", "reconstruction",
               "edit_mask")


@dataclass(slots=True)
class FaceSlot:
    """One edited face of a frame: who it is, and what each stage attached for it.

    ``identity`` is the tracker's id of the person (the same in every frame the person is
    in); the other fields are the per-face ones described in :class:`Frame` (landmarks, the
    crop, the codes, the rendered images). Each slot is cropped, smoothed and pasted on its
    own.
    """

    identity: int = 0
    landmarks: FaceLandmarks | None = None
    crop_quad: CropQuad | None = None
    crop_quad_raw: CropQuad | None = None
    bridged: bool = False
    crop_from_frame: np.ndarray | None = None
    crop_size: int | None = None
    aligned: np.ndarray | None = None
    w: torch.Tensor | None = None
    features: torch.Tensor | None = None
    rendered: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    edit_mask: np.ndarray | None = None
    carried: bool = False


def _first_slot_field(name: str) -> property:
    """A Frame property for slot field ``name``: the first slot's value (None, or False for
    ``bridged``, without a slot); setting it sets the first slot's, making one if needed
    (setting None or False on a frame without slots changes nothing)."""
    empty = FaceSlot()
    default = getattr(empty, name)

    def get(frame: Frame):
        return getattr(frame.slots[0], name) if frame.slots else default

    def set_(frame: Frame, value) -> None:
        if not frame.slots:
            if value is None or value is False:
                return
            frame.slots.append(FaceSlot())
        setattr(frame.slots[0], name, value)

    return property(get, set_, doc=f"The first slot's ``{name}`` (see :class:`FaceSlot`).")


@dataclass(slots=True, init=False, repr=False, eq=False)
class Frame:
    """One frame: timing, the RGB image, and whatever earlier stages attached.

    A frame owns its slots: ``Frame(slots=...)``, ``copy.copy`` and ``dataclasses.replace``
    copy them. ``pts`` counts ``time_base`` units (seconds = pts · time_base); both are ``None`` for
    sources without timing (image folders). Optional fields stay ``None`` until a stage sets
    them; ``face_found`` is False when landmarks were looked for and no face to edit was found
    (such a frame passes through the model stages unchanged).

    What the stages attach, in pipeline order:

    * ``faces``: list[FaceLandmarks], every face DetectLandmarks found, largest first (``[]``:
      none);
    * ``slots``: list[:class:`FaceSlot`], one per face being edited in this frame (TrackFace
      chooses them; one with the default ``--face largest``), in identity order. Per slot:
    * ``landmarks``: the face's landmarks;
    * ``crop_quad``: the FFHQ crop AlignFace cuts (set by TrackFace, replaced by SmoothCrop),
      ``crop_quad_raw`` the quad before SmoothCrop changed it; ``bridged`` True when TrackFace
      interpolated this frame's face from its neighbours (no detection);
    * ``crop_from_frame``: 3×3 float64, frame pixels → crop pixels of the S×S ``aligned``
      ([S,S,3] uint8 RGB); ``crop_size`` is that S (set by AlignFace);
    * ``w`` [L,512] and ``features`` [C,16,16] float32 torch: the encoder's codes;
    * ``rendered``: the edited face E = G(w̃, F̃) and ``reconstruction`` the unedited
      R = G(w, F), both [R,R,3] uint8 RGB at the generator's resolution; R is rendered (in the
      same batch as E) only for the transfer paste;
    * ``edit_mask``: [M,M] float32 in [0,1] in the crop's geometry, where and how strongly the
      edit shows (1: the edit, 0: the source's pixels): the region, minus what covers the face,
      times the frame's fade weight (MaskEdit; PasteBack applies it);
    * ``carried``: True when this face is between key frames (ChooseKeyFrames): it is not
      encoded or rendered, and the paste carries its last key frame's edit field to it;

    The per-face fields are also the Frame's own (``frame.w`` …): those of the first slot, for
    code that handles one face (the probe, metrics, personalize's data pass). Then:

    * ``original``: [H,W,3] uint8 RGB, the decoded image before paste-back replaced ``image``
      (KeepOriginal; for side-by-side output and the quality metrics).

    Set by the sources: ``source_index``, the index in the file of the frame a file played as a
    camera (FileCameraSource) shows; ``source_path``, the file an image-folder frame was read
    from.
    """

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction | None
    face_found: bool | None
    faces: list[FaceLandmarks] | None
    slots: list[FaceSlot]
    original: np.ndarray | None
    source_index: int | None
    source_path: str | None

    def __init__(self, index: int, image: np.ndarray, pts: int | None = None,
                 time_base: Fraction | None = None, face_found: bool | None = None,
                 faces: list[FaceLandmarks] | None = None, slots: list[FaceSlot] | None = None,
                 original: np.ndarray | None = None, source_index: int | None = None,
                 source_path: str | None = None, **first_slot) -> None:
        unknown = set(first_slot) - set(SLOT_FIELDS)
        if unknown:
            raise TypeError(f"Frame() got unexpected arguments {', '.join(sorted(unknown))}")
        self.index = index
        self.image = image
        self.pts = pts
        self.time_base = time_base
        self.face_found = face_found
        self.faces = faces
        self.slots = [copy.copy(slot) for slot in slots] if slots is not None else []
        self.original = original
        self.source_index = source_index
        self.source_path = source_path
        for name, value in first_slot.items():
            setattr(self, name, value)

    # the first slot's fields, for code that handles one face
    landmarks = _first_slot_field("landmarks")
    crop_quad = _first_slot_field("crop_quad")
    crop_quad_raw = _first_slot_field("crop_quad_raw")
    bridged = _first_slot_field("bridged")
    crop_from_frame = _first_slot_field("crop_from_frame")
    crop_size = _first_slot_field("crop_size")
    aligned = _first_slot_field("aligned")
    w = _first_slot_field("w")
    features = _first_slot_field("features")
    rendered = _first_slot_field("rendered")
    reconstruction = _first_slot_field("reconstruction")
    edit_mask = _first_slot_field("edit_mask")

    def __copy__(self) -> Frame:
        """A copy whose slots are copies too (a stage changing one leaves the other alone;
        ``dataclasses.replace`` copies them the same way)."""
        return dataclasses.replace(self)

    def __repr__(self) -> str:
        return (f"Frame(index={self.index}, image={getattr(self.image, 'shape', None)}, "
                f"face_found={self.face_found}, slots={len(self.slots)})")

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, or None without timing."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

