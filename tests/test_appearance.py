"""What an expression shows beyond motion (vidinv/face/appearance.py: the teeth between parted
lips, a smile's folds), drawn on the source's own crop and carried into the frame by the
transfer paste."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import aligned_real_face
from vidinv.face.appearance import (
    FOLD_DARKENING,
    combined_moves,
    expression_paint,
    find_mouth_inside,
    mouth_gap,
)
from vidinv.face.expressions import (
    LIPS_OUTER,
    MeshMoves,
    action_field,
    interocular,
    polygon_mask,
)
from vidinv.face.paste import ellipse_mask
from vidinv.face.transfer import FLOW_SIZE, EditField, EditTransfer

SIZE = 128


@pytest.fixture(scope="module")
def closed_mouth():
    """Frame 5 of the real clip (lips together: 0.05 inter-ocular apart), aligned at 128 px,
    and its mesh."""
    return aligned_real_face(5, SIZE)


@pytest.fixture(scope="module")
def open_mouth():
    """Frame 60 (shouting: the lips 0.54 inter-ocular apart)."""
    return aligned_real_face(60, SIZE)


def _colour(paint: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The paint's own colour (un-premultiplied), mean over ``where`` [S,S] bool: [3]."""
    return (paint[where, :3] / paint[where, 3:]).mean(axis=0)


def test_a_beaming_smile_shows_teeth_where_its_lips_part(closed_mouth):
    """Smile at full (strength 3): between the moved inner lips, where the source's mouth was
    closed, the paint covers the opening; its upper part (the teeth under the upper lip) is
    brighter than the person's lips by half as much again, its lower part darker than them;
    away from the mouth and the folds nothing is painted."""
    crop, points = closed_mouth
    field = action_field("smile", points, 1.0, SIZE)
    paint = expression_paint(crop, points, {"smile": 1.0}, [1.0], field)
    assert paint is not None and paint.shape == (SIZE, SIZE, 4) and paint.dtype == np.float32
    moves = combined_moves(points, {"smile": 1.0})
    gap = polygon_mask((SIZE, SIZE), mouth_gap(moves), 0.0) > 0.99
    own = polygon_mask((SIZE, SIZE), mouth_gap(MeshMoves(points)), 0.0) > 0.01
    new = gap & ~own
    assert new.sum() > 30
    assert paint[new, 3].mean() > 0.8
    lips = crop[polygon_mask((SIZE, SIZE), points[list(LIPS_OUTER)], 0.0) > 0.5].mean()
    rows = np.flatnonzero(new.any(axis=1))
    upper = new & (np.arange(SIZE)[:, None] <= rows[0] + 0.4 * (rows[-1] - rows[0]))
    lower = new & (np.arange(SIZE)[:, None] >= rows[0] + 0.8 * (rows[-1] - rows[0]))
    assert _colour(paint, upper).mean() > 1.5 * lips
    assert _colour(paint, lower).mean() < 0.8 * lips
    # nothing far from the mouth: the eyes' band, above the nose wings
    unit = interocular(points)
    above = np.arange(SIZE) < points[[129, 358], 1].min() - 0.1 * unit
    assert paint[above, 3].max() < 1e-3


def test_a_clear_smile_parts_no_lips_and_only_deepens_its_folds(closed_mouth):
    """Strength 1 (a third of the full smile) keeps the lips together: no teeth, only the
    folds' darkening, at most :data:`FOLD_DARKENING` × its amount; a smile the model takes
    no way (scale 0) paints nothing, nor does an opened jaw."""
    crop, points = closed_mouth
    field = action_field("smile", points, 1 / 3, SIZE)
    paint = expression_paint(crop, points, {"smile": 1 / 3}, [1.0], field)
    assert paint is not None
    assert 0.5 * FOLD_DARKENING / 3 < paint[..., 3].max() <= FOLD_DARKENING / 3 + 1e-4
    assert np.abs(paint[..., :3]).max() == 0.0   # black: a darkening
    assert expression_paint(crop, points, {"smile": 1 / 3}, [0.0], field * 0) is None
    # an opened jaw keeps its motion alone (its stretched lips read as open to dlib; a drawn
    # dark inside read as less open)
    jaw = action_field("mouth_open", points, 1.0, SIZE)
    assert expression_paint(crop, points, {"mouth_open": 1.0}, [1.0], jaw) is None


def test_a_mouth_already_open_keeps_its_own_inside(open_mouth):
    """On a shouting frame the output shows the source's own open mouth (its teeth, its
    tongue) wherever the motion brings it: no teeth are painted over it."""
    import cv2

    crop, points = open_mouth
    field = action_field("smile", points, 1.0, SIZE)
    paint = expression_paint(crop, points, {"smile": 1.0}, [1.0], field)
    own = polygon_mask((SIZE, SIZE), mouth_gap(MeshMoves(points)), 0.0)
    xs, ys = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32))
    shown = cv2.remap(own, xs + field[..., 0], ys + field[..., 1], cv2.INTER_LINEAR) > 0.99
    assert shown.sum() > 200
    assert paint is None or paint[shown, 3].max() < 0.02


def test_the_transfer_paints_the_layer_inside_the_face_mask_only():
    """A field's paint reaches the frame through the crop transform, over the moved pixels;
    where the mask is 0 (a hand over the mouth, a region left out) the frame is unchanged."""
    rng = np.random.default_rng(0)
    frame = rng.integers(60, 120, (256, 256, 3), dtype=np.uint8)
    crop_from_frame = np.array([[1.0, 0, -64], [0, 1.0, -64], [0, 0, 1]])
    paint = np.zeros((FLOW_SIZE, FLOW_SIZE, 4), np.float32)
    paint[60:70, 50:80, :3] = 230.0
    paint[60:70, 50:80, 3] = 1.0
    field = EditField(np.zeros((FLOW_SIZE, FLOW_SIZE, 2), np.float32), None, paint)
    mask = ellipse_mask(FLOW_SIZE)
    out = EditTransfer().apply(frame, field, crop_from_frame, 128, mask)
    inner = (slice(64 + 62, 64 + 68), slice(64 + 53, 64 + 77))
    assert np.abs(out[inner].astype(int) - 230).max() <= 1
    untouched = out.copy()
    untouched[64 + 58:64 + 72, 64 + 48:64 + 82] = frame[64 + 58:64 + 72, 64 + 48:64 + 82]
    assert np.array_equal(untouched, frame)
    covered = mask.copy()
    covered[55:75, 45:85] = 0.0
    assert np.array_equal(EditTransfer().apply(frame, field, crop_from_frame, 128, covered), frame)


def test_a_paint_layer_fades_in_and_out_with_the_fields():
    """Between key frames, and from one key field into the next, the paint is mixed like the
    motion: a layer that starts (the lips begin to part) or ends fades, it does not pop."""
    from vidinv.stages.face import blend_fields, lerp_fields

    flow = np.zeros((8, 8, 2), np.float32)
    paint = np.zeros((8, 8, 4), np.float32)
    paint[2:4, 2:4] = (200.0, 190.0, 180.0, 1.0)
    painted, bare = EditField(flow, None, paint), EditField(flow, None, None)
    assert np.allclose(blend_fields(painted, bare, 0.7).paint, 0.3 * paint)
    assert np.allclose(blend_fields(bare, painted, 0.7).paint, 0.7 * paint)
    assert blend_fields(bare, bare, 0.7).paint is None
    assert np.allclose(lerp_fields(None, painted, 0.25).paint, 0.25 * paint)
    assert np.allclose(lerp_fields(bare, painted, 0.25).paint, 0.25 * paint)


def test_a_face_that_smiles_with_its_teeth_keeps_its_own():
    """The astronaut smiles with her teeth showing (her lips only 0.15 inter-ocular apart): a
    smile edit moves her own teeth and paints none over them; the real clip's closed mouths
    count as showing none."""
    import cv2
    import skimage.data

    from vidinv.face.appearance import own_teeth_showing
    from vidinv.face.landmarks import MediaPipeLandmarks

    crop = cv2.resize(skimage.data.astronaut()[20:260, 80:320], (SIZE, SIZE),
                      interpolation=cv2.INTER_AREA)
    with MediaPipeLandmarks() as detector:
        points = detector.detect(crop)[0].points[:468]
    assert own_teeth_showing(crop, points) == 1.0
    inside = find_mouth_inside(crop[None], points[None])   # what personalize would store
    assert inside is not None and inside.image.shape[1] > 2 * inside.image.shape[0]
    field = action_field("smile", points, 1.0, SIZE)
    paint = expression_paint(crop, points, {"smile": 1.0}, [1.0], field)
    moves = combined_moves(points, {"smile": 1.0})
    opening = polygon_mask((SIZE, SIZE), mouth_gap(moves), 0.0) > 0.99
    assert paint is None or paint[opening, 3].mean() < 0.1


def test_closed_mouths_of_the_real_clip_show_no_teeth(closed_mouth, open_mouth):
    """Neither a closed mouth nor the real clip's shouting one (dark inside, no teeth) shows
    teeth: nothing of them is stored by personalize."""
    from vidinv.face.appearance import own_teeth_showing

    assert own_teeth_showing(*closed_mouth) == 0.0
    assert own_teeth_showing(*open_mouth) == 0.0
    crops, points = (np.stack(pair) for pair in zip(closed_mouth, open_mouth, strict=True))
    assert find_mouth_inside(crops, points) is None


def test_the_persons_own_mouth_inside_fills_the_parted_lips(closed_mouth):
    """Given the person's own open mouth (here a green picture, to tell it apart), the parted
    lips show it, not the synthesised teeth."""
    from vidinv.face.appearance import MouthInside

    crop, points = closed_mouth
    green = np.zeros((12, 30, 3), np.uint8)
    green[..., 1] = 200
    field = action_field("smile", points, 1.0, SIZE)
    paint = expression_paint(crop, points, {"smile": 1.0}, [1.0], field, MouthInside(green))
    opening = polygon_mask((SIZE, SIZE), mouth_gap(combined_moves(points, {"smile": 1.0})),
                           0.0) > 0.99
    colour = _colour(paint, opening & (paint[..., 3] > 0.5))
    assert colour[1] > 150 and colour[0] < 40 and colour[2] < 40


def test_a_model_folder_keeps_the_persons_mouth_inside(tmp_path):
    """``personalize`` stores the open mouth it found; loading the folder gives it back, and
    the wiring hands it to the paste; a folder without one gives None; a file that is not an
    8-bit colour picture is a one-line error naming the fix; a build that finds none removes
    an earlier one."""
    import cv2

    from tests.model_fixtures import make_tiny_model
    from vidinv.config import PipelineConfig
    from vidinv.errors import CheckpointError
    from vidinv.models.folder import (
        MOUTH_INSIDE_FILE,
        load_model_bundle,
        replaceable_model_folder,
        save_mouth_inside,
        write_manifest,
    )
    from vidinv.pipeline.wiring import build_pipeline, make_networks
    from vidinv.stages.face import PasteBack

    folder = make_tiny_model(tmp_path / "model")
    assert load_model_bundle(folder).mouth_inside is None
    inside = np.random.default_rng(0).integers(0, 256, (10, 24, 3), dtype=np.uint8)
    save_mouth_inside(folder, inside)
    write_manifest(folder)
    assert replaceable_model_folder(folder) is None   # still a folder vidinv wrote
    bundle = load_model_bundle(folder)
    assert np.array_equal(bundle.mouth_inside, inside)
    networks = make_networks(bundle, PipelineConfig(), None)
    stages = [s for seg in build_pipeline(PipelineConfig(), networks, "clip.mp4") for s in seg]
    paste = next(s for s in stages if isinstance(s, PasteBack))
    assert np.array_equal(paste.mouth_inside.image, inside)
    for bad in (np.zeros((10, 24), np.uint8), np.zeros((10, 24, 3), np.uint16)):
        cv2.imwrite(str(folder / MOUTH_INSIDE_FILE), bad)
        with pytest.raises(CheckpointError, match="delete it") as caught:
            load_model_bundle(folder)
        assert "\n" not in str(caught.value)
    (folder / MOUTH_INSIDE_FILE).write_bytes(b"not a picture")
    with pytest.raises(CheckpointError, match="delete it"):
        load_model_bundle(folder)
    # a build that finds none removes what an earlier build (another clip) left
    save_mouth_inside(folder, None)
    assert load_model_bundle(folder).mouth_inside is None


@pytest.mark.parametrize("known", [True, False])
def test_the_paste_shows_the_stored_mouth_only_on_the_models_own_person(closed_mouth, known):
    """The paste draws a smile's teeth from the model folder's mouth inside on a face the model
    knows (R is the source), and synthesises them on one it does not (R is someone else):
    the stored mouth is the model's person's."""
    import cv2

    from vidinv.face.appearance import mouth_gap
    from vidinv.frame import FaceLandmarks, FaceSlot, Frame
    from vidinv.personalize.warps import warp_face
    from vidinv.stages.face import PasteBack

    crop, points = closed_mouth
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[64:192, 64:192] = crop
    in_frame = points + 64.0
    landmarks = FaceLandmarks(eye_left=in_frame[33], eye_right=in_frame[263],
                              mouth_left=in_frame[61], mouth_right=in_frame[291],
                              points=in_frame, box=(*in_frame.min(0), *in_frame.max(0)),
                              backend="mediapipe")
    small = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    other = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    slot = FaceSlot(identity=0, landmarks=landmarks,
                    crop_from_frame=np.array([[1.0, 0, -64], [0, 1.0, -64], [0, 0, 1]]),
                    crop_size=128, aligned=small, reconstruction=small if known else other,
                    rendered=cv2.resize(warp_face(crop, points, "smile", 1.0), (64, 64),
                                        interpolation=cv2.INTER_AREA))
    if not known:   # E moves like R does: the fit sees the same smile on the other face
        slot.rendered = cv2.resize(warp_face(cv2.resize(other, (128, 128)), points, "smile",
                                             1.0), (64, 64), interpolation=cv2.INTER_AREA)
    green = np.zeros((12, 30, 3), np.uint8)
    green[..., 1] = 200
    paste = PasteBack(mode="transfer", actions=lambda: {"smile": 1.0}, mouth_inside=green)
    out = next(iter(paste([Frame(index=0, image=frame, slots=[slot], face_found=True)]))).image
    opening = polygon_mask((256, 256), mouth_gap(combined_moves(in_frame, {"smile": 1.0})),
                           0.0) > 0.99
    r, g, b = out[opening].astype(float).mean(axis=0)
    assert (g - max(r, b) > 60) == known
    assert np.abs(out[opening].astype(int) - frame[opening]).mean() > 20   # painted either way
