"""Left-right symmetry of an edit: an expression of both sides of the face, not of one.

A smile is AU12 on both sides; the small embedded model's edit is often lopsided (one corner
up, the other out: a smirk), and optical flow between two soft renders adds noise of its own
to each side. For an edit that is symmetric by nature (:data:`SYMMETRIC_EDITS`), the transfer
field is averaged with its own mirror image about the face's midline, found from the face
mesh: each MediaPipe point has a mirror partner (``assets/face_mesh_mirror.txt``, made by
``scripts/mesh_mirror.py``), and the map that takes every point to its partner — an affine
reflection plus what it leaves over, interpolated between the points
(:meth:`~vidinv.face.transfer.EditField.moved`) — carries the field across, its vectors
reflected. A turned head's sides are not the same size in the picture; the mesh's map follows
that. Gaze to one side, a turn of the head and directions of unknown meaning are left as
they are.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from vidinv.face.transfer import EditField
from vidinv.frame import MESH_POINTS  # the mirror table covers these (not the irises)

#: Edits that move both sides of the face alike (the expression bank's names,
#: vidinv/face/expressions.py); any other name, or an edit of unknown name, is left as it is.
SYMMETRIC_EDITS = frozenset({"smile", "frown", "brows_raised", "eyes_closed", "eyes_open",
                             "eyes_wide", "mouth_open", "pout", "gaze_vertical", "pitch"})


@functools.cache
def mesh_mirror() -> np.ndarray:
    """[468] int: the index of each mesh point's mirror partner (itself on the midline)."""
    text = resources.files("vidinv.assets").joinpath("face_mesh_mirror.txt").read_text()
    table = np.array([int(line) for line in text.split()], dtype=np.int64)
    if table.shape != (MESH_POINTS,) or not (table[table] == np.arange(MESH_POINTS)).all():
        raise ValueError("face_mesh_mirror.txt is not a left-right pairing of the 468 mesh "
                         "points; regenerate it with scripts/mesh_mirror.py")
    return table


def is_symmetric(names: frozenset[str] | None) -> bool:
    """Whether every edit in force (``names``; None: unknown) is one of
    :data:`SYMMETRIC_EDITS` (and at least one is)."""
    return bool(names) and names <= SYMMETRIC_EDITS


def mirrored(field: EditField, points: np.ndarray) -> EditField:
    """An edit field [U,U,·] in a face crop (U pixels) mirrored about the face: the value at a
    place is the one at its mirror place, the flow's vectors reflected too. ``points`` [N,2]
    (N ≥ 468) are the face's mesh points in the crop."""
    mesh = np.asarray(points, dtype=np.float64)[:MESH_POINTS]
    return field.moved(mesh[mesh_mirror()], mesh)  # x takes the value at its mirror place


def symmetrized(field: EditField, points: np.ndarray) -> EditField:
    """``(field + mirrored(field)) / 2``, flow and brightness (:func:`mirrored`)."""
    other = mirrored(field, points)
    half = np.float32(0.5)
    brightness = (None if field.brightness is None
                  else ((field.brightness + other.brightness) * half).astype(np.float32))
    return EditField(((field.flow + other.flow) * half).astype(np.float32), brightness)
