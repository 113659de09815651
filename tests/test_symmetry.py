"""The edit's left-right symmetry (vidinv/face/symmetry.py): the mesh's mirror table and the
mirrored field."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidinv.face.expressions import (
    BROWS_SIDES,
    CENTRE_LINE,
    EYE_LOWER,
    EYE_UPPER,
    MOUTH_CORNERS,
    UNDER_EYES,
)
from vidinv.face.symmetry import (
    MESH_POINTS,
    is_symmetric,
    mesh_mirror,
    mirrored,
    symmetrized,
)
from vidinv.face.transfer import EditField


def test_the_mirror_table_pairs_the_faces_sides():
    """Its own inverse; the expression bank's left and right point lists are each other's
    mirror, point by point; the centre line maps onto itself."""
    mirror = mesh_mirror()
    assert mirror.shape == (MESH_POINTS,) and (mirror[mirror] == np.arange(MESH_POINTS)).all()
    pairs = [*zip(*EYE_UPPER, strict=True), *zip(*EYE_LOWER, strict=True),
             *zip(*UNDER_EYES, strict=True), MOUTH_CORNERS]
    for (a_inner, a_outer), (b_inner, b_outer) in [BROWS_SIDES]:
        pairs += [*zip(a_inner, b_inner, strict=True), *zip(a_outer, b_outer, strict=True)]
    assert all(mirror[left] == right for left, right in pairs), \
        [(a, b, mirror[a]) for a, b in pairs if mirror[a] != b]
    assert set(mirror[list(CENTRE_LINE)]) <= set(CENTRE_LINE)


def _symmetric_face(size: int = 128) -> np.ndarray:
    """[468,2] mesh points of a real face (the astronaut), made exactly symmetric about the
    crop's vertical centre line and placed in a ``size`` crop."""
    from skimage import data

    from vidinv.face.landmarks import create_landmark_detector

    detector = create_landmark_detector("mediapipe")
    points = detector.detect(data.astronaut())[0].points[:MESH_POINTS]
    detector.close()
    points = (points - points.mean(axis=0)) / np.ptp(points[:, 1]) * 0.7 * size + size / 2
    partners = points[mesh_mirror()] * [-1, 1] + [size, 0]
    return (points + partners) / 2


def test_a_field_of_one_side_is_mirrored_onto_the_other():
    """A flow that moves the image-left mouth corner up and outward (a half smile) comes out
    on the other corner up and outward the other way, and averaged, both corners move alike
    at half the motion; a brightness field goes across unchanged in sign."""
    size = 128
    points = _symmetric_face(size)
    left, right = points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    bump = np.exp(-((xs - left[0]) ** 2 + (ys - left[1]) ** 2) / (2 * 4.0 ** 2))
    flow = np.dstack([-3 * bump, -2 * bump]).astype(np.float32)  # outward (−x) and up

    def at(values: np.ndarray, point: np.ndarray) -> np.ndarray:
        return cv2.remap(values, np.float32([[point[0]]]), np.float32([[point[1]]]),
                         cv2.INTER_LINEAR).reshape(-1)

    shade = (5 * bump)[..., None].astype(np.float32)
    field = EditField(flow, shade)
    across = mirrored(field, points)
    assert np.allclose(at(across.flow, right), [3, -2], atol=0.3)  # outward: +x on that side
    assert np.abs(at(across.flow, left)).max() < 0.2
    both = symmetrized(field, points)
    assert np.allclose(at(both.flow, left), [-1.5, -1], atol=0.2)
    assert np.allclose(at(both.flow, right), [1.5, -1], atol=0.2)
    assert np.allclose(at(across.brightness, right), [5], atol=0.4)


@pytest.mark.parametrize("names, expected", [
    (frozenset({"smile"}), True), (frozenset({"smile", "brows_raised"}), True),
    (frozenset({"smile", "gaze_horizontal"}), False), (frozenset({"yaw"}), False),
    (frozenset(), False), (None, False)])
def test_only_edits_symmetric_by_nature_are_made_symmetric(names, expected):
    assert is_symmetric(names) is expected


def test_the_pipeline_asks_the_editor_which_edits_are_in_force(tmp_path):
    """A single-direction editor keeps its direction's name through make_networks, so a
    smile is made symmetric; a smile with a gaze to one side, or at strength 0, is not."""
    from tests.model_fixtures import make_tiny_model
    from vidinv.config import PipelineConfig
    from vidinv.latent.directions import Direction
    from vidinv.latent.editing import CombinedEditor, LatentEditor
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.wiring import make_networks, symmetric_edit

    bundle = load_model_bundle(make_tiny_model(tmp_path / "model"))
    generator = bundle.generator
    vector = np.random.default_rng(0).normal(size=generator.style_dim).astype(np.float32)
    smile = Direction(name="smile", vector=vector)
    gaze = Direction(name="gaze_horizontal", vector=vector)
    editor = LatentEditor(generator, smile, 2.0, check=False)
    single = make_networks(bundle, PipelineConfig(), editor)
    assert symmetric_edit(single.edit)()
    both = CombinedEditor.from_directions(generator, {"smile": smile, "gaze_horizontal": gaze},
                                          {"smile": 1.0, "gaze_horizontal": 1.0}, check=False)
    asked = symmetric_edit(both)
    assert not asked()
    both.strengths["gaze_horizontal"] = 0.0  # a slider moved: asked again on each key frame
    assert asked()
    assert not symmetric_edit(None)()
