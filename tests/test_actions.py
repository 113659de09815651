"""An edit read as the action units it was taught (vidinv/face/expressions.py: action_field,
edit_actions; vidinv/face/transfer.py: fit_actions), and the pipeline asking for it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.media import aligned_real_face
from vidinv.face.expressions import (
    EYE_LOWER,
    FULL_STRENGTH,
    MOUTH_CORNERS,
    action_field,
    edit_actions,
    interocular,
    moved_points,
)
from vidinv.face.paste import ellipse_mask
from vidinv.face.transfer import MIN_MOTION, EditTransfer, fit_actions

SIZE = 128


@pytest.fixture(scope="module")
def face():
    """One aligned 128 px crop of the real clip (frame 40) and its MediaPipe mesh [468,2]."""
    return aligned_real_face(40, SIZE)


def _moved(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _at(field: np.ndarray, point: np.ndarray) -> np.ndarray:
    return np.array([cv2.remap(np.ascontiguousarray(field[..., c]), np.float32([[point[0]]]),
                               np.float32([[point[1]]]), cv2.INTER_LINEAR)[0, 0]
                     for c in (0, 1)])


def test_the_smile_field_lifts_the_corners_and_the_lower_lids(face):
    """Strength 2's smile field (amount 2/3): each mouth corner's new place, ≥ 0.15
    inter-ocular higher (AU12), takes its pixel from the corner; the lower lids take theirs
    from ≥ 0.03 below (AU6); amount 0 is no motion; a kind without a field is an error naming
    the ones with."""
    _, points = face
    unit = interocular(points)
    field = action_field("smile", points, 2 / 3, SIZE)
    assert field.shape == (SIZE, SIZE, 2) and field.dtype == np.float32
    target = moved_points("smile", points, 2 / 3)
    for corner in MOUTH_CORNERS:
        # the corner's new place (≥ 0.15 u higher) takes its pixel from the corner
        assert points[corner, 1] - target[corner, 1] >= 0.15 * unit
        assert np.linalg.norm(target[corner] + _at(field, target[corner]) - points[corner]) \
            < 0.05 * unit
    lids = [i for side in EYE_LOWER for i in side]
    assert np.mean([_at(field, points[i])[1] for i in lids]) > 0.03 * unit
    assert not action_field("smile", points, 0.0, SIZE).any()
    with pytest.raises(ValueError, match="no motion field.*smile"):
        action_field("smirk", points, 0.5, SIZE)


@pytest.mark.parametrize("kind, amount", [("roll", 1.0), ("brows_raised", 1.0),
                                          ("frown", 0.5), ("yaw", -1.0),
                                          ("gaze_horizontal", -0.5)])
def test_the_field_is_the_motion_the_model_was_taught(face, kind, amount):
    """For an expression that is motion only, the crop moved by its field is the warp that
    made the training data (personalize/warps.warp_face), to a level on the face."""
    from vidinv.personalize.warps import warp_face

    crop, points = face
    moved = _moved(crop, action_field(kind, points, amount, SIZE)).astype(np.int16)
    taught = warp_face(crop, points, kind, amount).astype(np.int16)
    inside = ellipse_mask(SIZE) > 0.99  # outside the crop the two extend it differently
    assert np.abs(moved[inside] - taught[inside]).max() <= 1


@pytest.mark.parametrize("kind, amount, axis", [("gaze_horizontal", 1.0, 0),
                                                ("gaze_horizontal", -0.5, 0),
                                                ("gaze_vertical", -1.0, 1)])
def test_the_gaze_field_moves_the_irises_inside_the_eyes(face, kind, amount, axis):
    """A gaze's field moves each iris by its travel the way asked (the iris's new place takes
    its pixel from the iris: 0.3 of the eye's width across at full, 0.06 inter-ocular up or
    down); across, nothing outside the eye openings moves; up or down, the upper lids follow
    the iris (:data:`GAZE_LIDS`) and nothing below the nose moves."""
    from vidinv.face.expressions import (
        EYE_CONTOURS,
        EYE_CORNERS,
        EYE_UPPER,
        GAZE_LIDS,
        GAZE_TRAVEL,
        NOSE_TIP,
        iris_centres,
    )

    crop, points = face
    field = action_field(kind, points, amount, SIZE)
    eyes = np.zeros((SIZE, SIZE), np.uint8)
    for side, centre in enumerate(iris_centres(points)):
        cv2.fillPoly(eyes, [np.round(points[list(EYE_CONTOURS[side])]).astype(np.int32)], 1)
        width = np.linalg.norm(points[EYE_CORNERS[2 * side + 1]] - points[EYE_CORNERS[2 * side]])
        travel = GAZE_TRAVEL[0] * width if axis == 0 else GAZE_TRAVEL[1] * interocular(points)
        shift = np.zeros(2)
        shift[axis] = travel * amount
        target = centre + shift
        assert np.linalg.norm(target + _at(field, target) - centre) < 0.15 * abs(shift[axis])
        if axis == 1:
            for lid in EYE_UPPER[side]:
                moved = points[lid] + GAZE_LIDS[0] * shift
                assert np.linalg.norm(moved + _at(field, moved) - points[lid]) \
                    < 0.15 * abs(shift[axis])
    if axis == 0:
        outside = cv2.dilate(eyes, np.ones((9, 9), np.uint8)) == 0   # the opening's blur
        assert not field[outside].any()
    else:
        below = np.arange(SIZE) > points[NOSE_TIP, 1]
        assert np.abs(field[below]).max() < 0.05


@pytest.mark.parametrize("strengths, expected", [
    ({"smile": 2.0}, {"smile": 2 / 3}),
    ({"smile": 6.0, "brows_raised": 1.5}, {"smile": 1.0, "brows_raised": 0.5}),
    ({"smile": 2.0, "frown": 0.0}, {"smile": 2 / 3}),
    ({"yaw": -4.5}, {"yaw": -1.0}),
    ({"smile": -1.0}, None),                        # the opposite of a smile: no such warp
    ({"eyes_open": 3.0}, None),                     # −eyes_closed
    ({"smile": 2.0, "gaze_horizontal": -1.5}, {"smile": 2 / 3, "gaze_horizontal": -0.5}),
    ({"smile": 2.0, "sefa_3": 1.0}, None),          # a direction of unknown meaning
    ({"smile": 0.0}, None),
    ({}, None),
])
def test_an_edit_is_read_as_the_expressions_it_was_taught(strengths, expected):
    got = edit_actions(strengths)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.keys() == expected.keys()
        assert all(abs(got[k] - v) < 1e-9 for k, v in expected.items())
    assert FULL_STRENGTH == 3.0


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_the_fit_finds_how_far_an_edit_goes_along_its_expression(face, scale):
    """E made from R by the smile's field × ``scale`` (and taken down to a 64-px model's
    side): the fitted scale is ``scale`` within 0.08, and the transfer's field is that
    multiple of the expression's."""
    crop, points = face
    smile = action_field("smile", points, 2 / 3, SIZE)
    mask = ellipse_mask(SIZE)  # the transfer paste's face mask
    edited = _moved(crop, np.float32(scale) * smile)
    small = [cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA) for image in
             (edited, crop)]
    flow = EditTransfer(flow_size=SIZE).field(*small, mask, actions=[smile]).flow
    # where the scaled field moves ≥ 2 × MIN_MOTION it is the flow; below MIN_MOTION, none
    moving = np.linalg.norm(flow, axis=2) >= 2 * MIN_MOTION
    found = float((flow[moving] * smile[moving]).sum() / max((smile[moving] ** 2).sum(), 1e-9))
    assert abs(found - scale) < 0.08, found
    assert np.allclose(flow[moving], np.float32(found) * smile[moving], atol=1e-4)
    still = np.linalg.norm(np.float32(found) * smile, axis=2) <= MIN_MOTION
    assert not flow[still].any()


def test_two_expressions_are_fitted_together(face):
    """A smile at 0.8 of its field and brows raised at 0.5 of theirs, in one edit: both
    found (within 0.1); an expression the edit does not make is found near 0."""
    crop, points = face
    smile = action_field("smile", points, 2 / 3, SIZE)
    brows = action_field("brows_raised", points, 1.0, SIZE)
    frown = action_field("frown", points, 1.0, SIZE)
    mask = ellipse_mask(SIZE)  # the transfer paste's face mask
    edited = _moved(crop, np.float32(0.8) * smile + np.float32(0.5) * brows)
    found = fit_actions(edited, crop, mask, [smile, brows, frown])
    assert abs(found[0] - 0.8) < 0.1 and abs(found[1] - 0.5) < 0.1, found
    assert found[2] < 0.15, found


def test_the_pipeline_reads_the_edits_in_force(tmp_path):
    """The paste asks the editor on each key frame: a smile at 2 is the smile at 2/3; a slider
    that adds a gaze adds the gaze's third; one that adds a direction of no taught meaning
    turns it back to optical flow (None); no editor, none; face.actions=false wires no reading
    at all; face.draw=false wires no drawing."""
    from tests.model_fixtures import make_tiny_model
    from vidinv.config import PipelineConfig
    from vidinv.latent.directions import Direction
    from vidinv.latent.editing import CombinedEditor
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.wiring import build_pipeline, edit_actions_of, make_networks
    from vidinv.stages.face import PasteBack

    bundle = load_model_bundle(make_tiny_model(tmp_path / "model"))
    generator = bundle.generator
    vector = np.random.default_rng(0).normal(size=generator.style_dim).astype(np.float32)
    editor = CombinedEditor.from_directions(
        generator, {"smile": Direction(name="smile", vector=vector),
                    "gaze_horizontal": Direction(name="gaze_horizontal", vector=-vector),
                    "sefa_3": Direction(name="sefa_3", vector=vector[::-1].copy())},
        {"smile": 2.0}, check=False)
    asked = edit_actions_of(editor)
    assert asked() == pytest.approx({"smile": 2 / 3})
    editor.strengths["gaze_horizontal"] = 1.0
    assert asked() == pytest.approx({"smile": 2 / 3, "gaze_horizontal": 1 / 3})
    editor.strengths["sefa_3"] = 1.0
    assert asked() is None
    editor.strengths["sefa_3"] = 0.0
    assert edit_actions_of(None)() is None

    def paste(config):
        networks = make_networks(bundle, config, editor)
        stages = [s for seg in build_pipeline(config, networks, "clip.mp4") for s in seg]
        return next(s for s in stages if isinstance(s, PasteBack))

    editor.strengths["gaze_horizontal"] = 0.0
    assert paste(PipelineConfig()).actions() == pytest.approx({"smile": 2 / 3})
    off = PipelineConfig().with_overrides(["face.actions=false"])
    assert paste(off).actions() is None
    assert paste(PipelineConfig()).draw
    assert not paste(PipelineConfig().with_overrides(["face.draw=false"])).draw


def test_calibration_keeps_the_largest_scale_at_which_strength_3_still_grows():
    """The embedded smile's measured rows (share of the full smile at strengths 2 / 3 for the
    scales 1/3 … 2/3): 3 grows by at least half the smile's own step (1.25 ×: ≥ 1.125 ×) up to
    scale 1/2 and not after, so 1/2; a kind reaching the full expression while growing takes
    the smallest such scale; none growing, the nominal one; no rows, the nominal one."""
    from vidinv.personalize.calibrate import (
        CANDIDATE_SCALES,
        NOMINAL_SCALE,
        Response,
        calibrated_scale,
    )

    smile = Response([(0.54, 0.70), (0.62, 0.79), (0.70, 0.81), (0.77, 0.79), (0.80, 0.74)],
                     growth=1.25)
    assert calibrated_scale(smile) == pytest.approx(0.5)
    brows = Response([(0.28, 0.48), (0.41, 0.62), (0.48, 0.87), (0.57, 1.10), (0.69, 1.24)],
                     growth=1.5)
    assert calibrated_scale(brows) == pytest.approx(CANDIDATE_SCALES[3])
    flat = Response([(0.5, 0.5)] * len(CANDIDATE_SCALES), growth=1.5)
    assert calibrated_scale(flat) == NOMINAL_SCALE
    assert calibrated_scale(None) == NOMINAL_SCALE
