"""Key frames: the networks and the edit's flow run on key frames only, and the edit field is
carried to the frames between, per face, following each frame's own crop."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.media import real_clip_path
from tests.model_fixtures import make_tiny_model
from vidinv.config import ConfigError, PipelineConfig
from vidinv.face.paste import ellipse_mask
from vidinv.face.transfer import FLOW_SIZE, EditTransfer
from vidinv.frame import FaceLandmarks, FaceSlot, Frame
from vidinv.stages.face import ChooseKeyFrames, PasteBack

# --- choosing key frames --------------------------------------------------------------------

#: A face's points in a 128-px crop: eyes 40 px apart, a mouth of eight points below them.
_EYES = np.array([[44.0, 50.0], [84.0, 50.0]])
_MOUTH = np.array([[48.0 + 32 * t, 92.0 + 6 * np.sin(np.pi * t)]
                   for t in np.linspace(0, 1, 8)])
_FACE = np.vstack([_EYES, [[64.0, 70.0], [40.0, 30.0], [88.0, 30.0]], _MOUTH])
_IDENTITY_CROP = np.eye(3)


def _landmarks(points: np.ndarray) -> FaceLandmarks:
    return FaceLandmarks(eye_left=points[0], eye_right=points[1], mouth_left=points[5],
                         mouth_right=points[-1], points=points,
                         box=(points[:, 0].min(), points[:, 1].min(), points[:, 0].max(),
                              points[:, 1].max()), backend="test")


def _smiling(amount: float) -> np.ndarray:
    """The face with its mouth corners up and out by ``amount`` inter-ocular distances."""
    points = _FACE.copy()
    points[5] += np.array([-1.0, -1.0]) * amount * 40 / np.sqrt(2)
    points[-1] += np.array([1.0, -1.0]) * amount * 40 / np.sqrt(2)
    return points


def _moved(points: np.ndarray, scale: float, shift: tuple[float, float]) -> np.ndarray:
    return points * scale + np.array(shift)


def _keys(stage: ChooseKeyFrames, faces_per_frame: list[dict[int, np.ndarray]]
          ) -> list[dict[int, bool]]:
    """Run ``stage`` over frames with the given faces ({identity: crop points}, the crop being
    the frame); per frame, {identity: is a key frame}."""
    frames = []
    for index, faces in enumerate(faces_per_frame):
        slots = [FaceSlot(identity=identity, landmarks=_landmarks(points),
                          crop_from_frame=_IDENTITY_CROP, crop_size=128)
                 for identity, points in faces.items()]
        frames.append(Frame(index=index, image=np.zeros((4, 4, 3), np.uint8), slots=slots,
                            face_found=bool(slots)))
    return [{slot.identity: not slot.carried for slot in frame.slots}
            for frame in stage(frames)]


def test_an_expression_change_makes_a_key_frame_and_the_head_moving_in_the_crop_does_not():
    still = _FACE
    faces = [still, still, still, _smiling(0.2), _smiling(0.2),
             _moved(_smiling(0.2), 1.1, (5.0, -3.0)),   # the whole face: an affine motion
             _smiling(0.2), _smiling(0.21)]             # a flicker below the threshold
    keys = _keys(ChooseKeyFrames(motion=0.05, every=100), [{0: p} for p in faces])
    assert [k[0] for k in keys] == [True, False, False, True, False, False, False, False]


def test_a_key_frame_comes_at_least_every_n_frames():
    keys = _keys(ChooseKeyFrames(motion=0.05, every=3), [{0: _FACE}] * 7)
    assert [k[0] for k in keys] == [True, False, False, True, False, False, True]
    assert all(k[0] for k in _keys(ChooseKeyFrames(every=1), [{0: _FACE}] * 4))


def test_each_face_gets_its_own_key_frames():
    # face 0 holds still but leaves for a frame; face 1 smiles at frame 2
    faces = [{0: _FACE, 1: _FACE + 200}, {0: _FACE, 1: _FACE + 200},
             {0: _FACE, 1: _smiling(0.3) + 200}, {1: _smiling(0.3) + 200},
             {0: _FACE, 1: _smiling(0.3) + 200}, {0: _FACE, 1: _smiling(0.3) + 200}]
    keys = _keys(ChooseKeyFrames(motion=0.05, every=100), faces)
    assert [k.get(0) for k in keys] == [True, False, False, None, True, False]
    assert [k[1] for k in keys] == [True, False, True, False, False, False]


def test_key_frame_settings_are_checked():
    config = PipelineConfig().with_overrides(["face.key_frames=false", "face.key_every=8",
                                              "face.key_motion=0.1"])
    assert (config.face.key_frames, config.face.key_every, config.face.key_motion) == \
        (False, 8, 0.1)
    for bad in ("face.key_every=0", "face.key_motion=0", "face.key_motion=nan"):
        with pytest.raises(ConfigError):
            PipelineConfig().with_overrides([bad])


def _coded_run(keys: list[int], count: int, absent: tuple[int, ...] = ()) -> list[Frame]:
    """``count`` frames of one face; on ``keys`` it is coded with w = index² (a [1,1] code),
    elsewhere carried, and on ``absent`` frames it is not there."""
    import torch

    frames = []
    for index in range(count):
        slots = [] if index in absent else [FaceSlot(
            identity=0, carried=index not in keys,
            w=torch.tensor([[float(index ** 2)]]) if index in keys else None)]
        frames.append(Frame(index=index, image=np.zeros((2, 2, 3), np.uint8), slots=slots,
                            face_found=bool(slots)))
    return frames


@pytest.mark.parametrize("on_device", [False, True])
def test_latent_smoothing_runs_on_across_carried_frames_weighing_by_frames(on_device):
    from vidinv.stages.latent import SmoothLatents

    stage = SmoothLatents("centred", sigma=1.5, timed=True, on_device=on_device)
    out = list(stage(_coded_run([0, 3, 6, 9], 10)))
    assert [f.index for f in out] == list(range(10))
    # around frame 3: frames 0 and 6 (3 away) and, the run's start reflected, frame 0's code
    # at frame −1 (4 away); frame 9 is beyond the window's 5 frames
    weights = np.exp(-0.5 * (np.array([-4.0, -3.0, 0.0, 3.0]) / 1.5) ** 2)
    codes = np.array([0.0, 0.0, 9.0, 36.0])
    assert float(out[3].slots[0].w) == pytest.approx(weights @ codes / weights.sum(), rel=1e-6)
    assert all(f.slots[0].w is None for f in out if f.index not in (0, 3, 6, 9))
    # a frame without the face ends its run: the key frames after it are not mixed in (the
    # run 0..3 ends at 3, both ends reflected: frame "−1" is 0's code, "4" is 3's, "7" and
    # "8" are 0's)
    out = list(SmoothLatents("centred", sigma=1.5, timed=True, on_device=on_device)(
        _coded_run([0, 3, 6, 9], 10, absent=(4,))))
    weights = np.exp(-0.5 * (np.array([-4.0, -3.0, 0.0, 1.0, 4.0, 5.0]) / 1.5) ** 2)
    codes = np.array([0.0, 0.0, 9.0, 9.0, 0.0, 0.0])
    assert float(out[3].slots[0].w) == pytest.approx(weights @ codes / weights.sum(), rel=1e-6)


@pytest.mark.parametrize("count", [2, 4, 12])  # runs shorter and longer than the window
@pytest.mark.parametrize("on_device", [False, True])
def test_timed_smoothing_of_consecutive_frames_is_the_plain_window_bit_for_bit(count, on_device):
    from vidinv.stages.latent import SmoothLatents

    def smoothed(timed: bool) -> list:
        stage = SmoothLatents("centred", sigma=1.5, timed=timed, on_device=on_device)
        return [f.slots[0].w for f in stage(_coded_run(list(range(count)), count))]

    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(smoothed(False), smoothed(True), strict=True))


def test_the_timed_ema_moves_as_far_over_a_gap_as_over_the_frames_in_it():
    from vidinv.stages.latent import SmoothLatents

    out = list(SmoothLatents("causal", alpha=0.5, timed=True)(_coded_run([0, 3], 4)))
    # w: 0 then 9 after 3 frames: 1 − (1 − α)³ of the way
    assert float(out[3].slots[0].w) == pytest.approx(9.0 * (1 - 0.5 ** 3))


# --- carrying the field ---------------------------------------------------------------------


def _texture(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8),
                        (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(coarse.astype(int) + rng.integers(-30, 30, (size, size, 3)), 0,
                   255).astype(np.uint8)


def _crop_at(x: float, y: float) -> np.ndarray:
    """The 128-px crop whose corner is frame pixel (x, y), at scale 1."""
    return np.array([[1.0, 0, -x], [0, 1.0, -y], [0, 0, 1]])


def _bump(image: np.ndarray, centre: tuple[float, float], sigma: float = 5.0,
          amount: float = 2.5) -> np.ndarray:
    """``image`` with the content around ``centre`` pushed ``amount`` px right (a Gaussian
    bump of motion: an edit that moves one place of the face)."""
    size = image.shape[0]
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    bump = amount * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    return cv2.remap(image, xs - bump.astype(np.float32), ys, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _slot(frame: np.ndarray, crop_from_frame: np.ndarray, *, carried: bool,
          edit: bool, landmarks: np.ndarray | None = None, local: bool = False) -> FaceSlot:
    """A face whose crop is the frame's 128-px square at ``crop_from_frame``; a key frame
    (``edit``) has R (the crop at 64 px) and E (R moved 2 px right: the edit's motion; with
    ``local``, only around the point (32, 40) of R)."""
    slot = FaceSlot(identity=0, crop_from_frame=crop_from_frame, crop_size=128,
                    carried=carried, landmarks=None if landmarks is None
                    else _landmarks(landmarks))
    if edit:
        crop = cv2.warpAffine(frame, crop_from_frame[:2], (128, 128))
        slot.reconstruction = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
        slot.rendered = (_bump(slot.reconstruction, (32, 40)) if local else
                         cv2.warpAffine(slot.reconstruction, np.float32([[1, 0, 2], [0, 1, 0]]),
                                        (64, 64), borderMode=cv2.BORDER_REFLECT))
    return slot


def _paste(stage: PasteBack, frames: list[tuple[np.ndarray, FaceSlot]]) -> list[np.ndarray]:
    records = [Frame(index=i, image=image, slots=[slot], face_found=True)
               for i, (image, slot) in enumerate(frames)]
    return [frame.image for frame in stage(records)]


def test_the_carried_field_follows_the_face_to_its_new_crop():
    """A key frame edits the face; in the next frame the whole scene moved by (10, 6) px and
    so did the crop: the carried edit lands on the face where it is now, as the key frame's
    output moved along (not where the face was)."""
    scene = _texture(320, seed=3)
    shift = (10, 6)
    moved_scene = np.roll(scene, shift[::-1], axis=(0, 1))
    key = _slot(scene, _crop_at(96, 96), carried=False, edit=True)
    carried = _slot(moved_scene, _crop_at(96 + shift[0], 96 + shift[1]), carried=True,
                    edit=False)
    out_key, out_carried = _paste(PasteBack(mode="transfer", carry=True),
                                  [(scene, key), (moved_scene, carried)])
    face = (slice(130, 190), slice(130, 190))
    assert np.abs(out_key[face].astype(int) - scene[face]).mean() > 4  # the edit shows
    expected = np.roll(out_key, shift[::-1], axis=(0, 1))
    assert np.abs(out_carried[face].astype(int) - expected[face]).mean() < 0.5
    # without carrying, the frame between key frames has no edit
    _, not_carried = _paste(PasteBack(mode="transfer"), [(scene, key), (moved_scene, carried)])
    assert np.array_equal(not_carried, moved_scene)


def test_the_carried_field_follows_the_landmarks_inside_the_crop():
    """The crop stays, the face moves 8 px inside it (its landmarks too): the field of an edit
    that moves one place of the face follows the landmarks, so the carried edit is the key
    frame's, moved with the face."""
    scene = _texture(320, seed=4)
    moved_scene = np.roll(scene, 8, axis=1)
    crop = _crop_at(96, 96)
    key = _slot(scene, crop, carried=False, edit=True, landmarks=_FACE, local=True)
    carried = _slot(moved_scene, crop, carried=True, edit=False, landmarks=_FACE + [8.0, 0.0])
    stuck = _slot(moved_scene, crop, carried=True, edit=False)  # no landmarks: not followed
    out_key, out_carried = _paste(PasteBack(mode="transfer", carry=True),
                                  [(scene, key), (moved_scene, carried)])
    _, out_stuck = _paste(PasteBack(mode="transfer", carry=True),
                          [(scene, key), (moved_scene, stuck)])
    core = (slice(160, 200), slice(150, 200))  # around the moved place, in the mask's core
    expected = np.roll(out_key, 8, axis=1)
    assert np.abs(out_key[core].astype(int) - scene[core]).mean() > 3  # the edit shows
    followed = np.abs(out_carried[core].astype(int) - expected[core]).mean()
    left_behind = np.abs(out_stuck[core].astype(int) - expected[core]).mean()
    assert followed < 0.5 * left_behind


def test_a_carried_face_keeps_its_own_edit_mask():
    """The carried field is limited by the carried frame's own edit_mask (here: all 0)."""
    scene = _texture(320, seed=5)
    key = _slot(scene, _crop_at(96, 96), carried=False, edit=True)
    carried = _slot(scene, _crop_at(96, 96), carried=True, edit=False)
    carried.edit_mask = np.zeros((128, 128), np.float32)
    out_key, out_carried = _paste(PasteBack(mode="transfer", carry=True),
                                  [(scene, key), (scene, carried)])
    assert not np.array_equal(out_key, scene)
    assert np.array_equal(out_carried, scene)


def test_the_field_split_is_the_transfer_itself():
    """field + apply (what a key frame stores and a carried frame applies) is the one-call
    transfer, bit for bit."""
    scene = _texture(256, seed=6)
    slot = _slot(scene, _crop_at(64, 64), carried=False, edit=True)
    mask = ellipse_mask(FLOW_SIZE)
    transfer = EditTransfer()
    whole = transfer(scene, slot.rendered, slot.reconstruction, slot.crop_from_frame, 128, mask)
    field = transfer.field(slot.rendered, slot.reconstruction, mask)
    assert np.array_equal(whole, transfer.apply(scene, field, slot.crop_from_frame, 128, mask))
    flow, residual = transfer.motion(slot.rendered, slot.reconstruction, mask)
    assert np.array_equal(flow, field.masked(mask)[0])
    assert np.array_equal(residual, field.masked(mask)[1])


# --- in the pipeline ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 24 frames of the real clip."""
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    reader = VideoReader(real_clip_path())
    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    with VideoWriter(path, reader.info, crf=12, preset="ultrafast") as writer:
        for frame in reader:
            if frame.index >= 24:
                break
            writer.write(frame)
    return path


def _edit(model: Path, clip: Path, out: Path, *overrides: str) -> tuple[list, list]:
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    config = PipelineConfig().with_overrides(["output.crf=0", *overrides])
    images, carried = [], []
    process_video(clip, out, bundle, config, resolve_editor(bundle, "smile", 3.0),
                  progress=False, on_frame=lambda f: (images.append(f.image),
                                                      carried.append(f.slots[0].carried)))
    return images, carried


def test_every_frame_a_key_frame_is_the_full_rate_edit_bit_for_bit(model, clip, tmp_path):
    """face.key_frames=false (the edit before key frames) and key frames on every frame give
    the same output: the stored field, the carry machinery and the timed latent smoothing
    change nothing when nothing is carried. The default carries some frames."""
    off, off_carried = _edit(model, clip, tmp_path / "off.mp4", "face.key_frames=false")
    every, every_carried = _edit(model, clip, tmp_path / "every.mp4", "face.key_every=1")
    assert not any(off_carried) and not any(every_carried)
    assert all(np.array_equal(a, b) for a, b in zip(off, every, strict=True))
    default, default_carried = _edit(model, clip, tmp_path / "default.mp4")
    assert any(default_carried) and not all(default_carried)
    assert not default_carried[0]


def _shift_in(out: np.ndarray, scene: np.ndarray) -> float:
    """The face region's horizontal shift (px) of ``out`` against ``scene``."""
    face = (slice(140, 180), slice(140, 180))
    grey = [cv2.cvtColor(np.ascontiguousarray(image[face]), cv2.COLOR_RGB2GRAY)
            .astype(np.float64) for image in (scene, out)]
    return cv2.phaseCorrelate(*grey)[0][0]


def _right_then_left(scene: np.ndarray, gap: int) -> list[tuple[np.ndarray, FaceSlot]]:
    """A still face: a key frame whose edit moves it 2 px right, ``gap`` − 1 carried frames,
    then a key frame whose edit moves it 2 px left."""
    crop = _crop_at(96, 96)
    right = _slot(scene, crop, carried=False, edit=True)
    left = _slot(scene, crop, carried=False, edit=True)
    left.rendered = cv2.warpAffine(left.reconstruction, np.float32([[1, 0, -2], [0, 1, 0]]),
                                   (64, 64), borderMode=cv2.BORDER_REFLECT)
    between = [(scene, _slot(scene, crop, carried=True, edit=False)) for _ in range(gap - 1)]
    return [(scene, right), *between, (scene, left)]


def test_carried_frames_move_from_one_key_field_to_the_next():
    """Interpolated, the frames between a key frame that moves the face right and one that
    moves it left by as much go from one to the other in even steps (no jump on the second key
    frame); held, they keep the first field and the change shows at once."""
    scene = _texture(320, seed=7)
    frames = _right_then_left(scene, 4)
    held = [_shift_in(out, scene) for out in _paste(
        PasteBack(mode="transfer", carry=True, field_memory=0.0), frames)]
    mixed = [_shift_in(out, scene) for out in _paste(
        PasteBack(mode="transfer", carry=True, interpolate=True, field_memory=0.0), frames)]
    assert held[0] > 3 and held[4] < -3 and min(held[1:4]) > 3  # 2 px of the crop at 64: 4
    assert np.allclose([mixed[0], mixed[4]], [held[0], held[4]], atol=0.1)
    assert abs(mixed[2]) < 0.35  # half way
    assert 0.3 < mixed[1] / held[0] < 0.7 and 0.3 < mixed[3] / held[4] < 0.7
    assert np.abs(np.diff(mixed)).max() < 0.5 * np.abs(np.diff(held)).max()
    with pytest.raises(ValueError, match="carry"):
        PasteBack(mode="transfer", interpolate=True)


def test_a_new_key_field_is_blended_with_the_faces_previous_one():
    """Two key frames of the same still face whose edits move it 2 px right, then 2 px left
    (a flow that flickers): with a field memory of 0.5 the second frame moves by the blend
    (about 0 px: close to the scene), without it by the full −2 px; a first key frame is not blended
    (nothing before it), and an unedited key frame (E = R) passes the frame through."""
    from vidinv.stages.face import blend_fields

    scene = _texture(320, seed=6)
    crop = _crop_at(96, 96)
    right = _slot(scene, crop, carried=False, edit=True)
    left = _slot(scene, crop, carried=False, edit=True)
    left.rendered = cv2.warpAffine(left.reconstruction, np.float32([[1, 0, -2], [0, 1, 0]]),
                                   (64, 64), borderMode=cv2.BORDER_REFLECT)
    face = (slice(140, 180), slice(140, 180))
    first_alone = _paste(PasteBack(mode="transfer", field_memory=0.5), [(scene, right)])[0]
    first, second = _paste(PasteBack(mode="transfer", field_memory=0.5),
                           [(scene, right), (scene, left)])
    _, second_alone = _paste(PasteBack(mode="transfer", field_memory=0.0),
                             [(scene, right), (scene, left)])
    assert np.array_equal(first, first_alone)
    moved = np.abs(second_alone[face].astype(int) - scene[face]).mean()
    blended = np.abs(second[face].astype(int) - scene[face]).mean()
    assert moved > 4 and blended < 0.5 * moved
    unedited = _slot(scene, crop, carried=False, edit=True)
    unedited.rendered = unedited.reconstruction.copy()
    assert np.array_equal(_paste(PasteBack(mode="transfer"), [(scene, right),
                                                              (scene, unedited)])[1], scene)
    assert blend_fields(None, None, 0.5) is None
    with pytest.raises(ValueError, match="field_memory"):
        PasteBack(mode="transfer", field_memory=1.0)
