"""The transfer paste: the model's edit motion moved onto the source's own pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.media import real_clip_head
from tests.model_fixtures import make_tiny_model
from vidinv.config import PipelineConfig
from vidinv.face.paste import ellipse_mask
from vidinv.face.transfer import FLOW_SIZE, EditTransfer
from vidinv.metrics.expression import laplacian_variance


def _textured(size: int, seed: int = 0) -> np.ndarray:
    """A sharp random texture with some large structure ([size,size,3] uint8)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    coarse = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(-40, 40, (size, size, 3))
    return np.clip(coarse.astype(int) + fine, 0, 255).astype(np.uint8)


def _face_and_frame(size: int = 64):
    """A frame whose central 128×128 square is the 'aligned crop' of side 128 (scale 1)."""
    frame = _textured(256, seed=1)
    crop_from_frame = np.array([[1.0, 0, -64], [0, 1.0, -64], [0, 0, 1]])
    reconstruction = cv2.resize(frame[64:192, 64:192], (size, size),
                                interpolation=cv2.INTER_AREA)
    return frame, crop_from_frame, reconstruction


def test_an_unedited_face_returns_the_frame_bit_for_bit():
    frame, crop_from_frame, reconstruction = _face_and_frame()
    mask = ellipse_mask(FLOW_SIZE)
    out = EditTransfer()(frame, reconstruction.copy(), reconstruction, crop_from_frame, 128, mask)
    assert np.array_equal(out, frame)
    assert out is not frame


def test_the_edit_motion_moves_the_source_pixels_and_nothing_outside_the_mask():
    frame, crop_from_frame, reconstruction = _face_and_frame()
    # The edit: the face's content moved 2 px (of 64) to the right, i.e. 4 frame pixels.
    shift = np.float32([[1, 0, 2], [0, 1, 0]])
    edited = cv2.warpAffine(reconstruction, shift, (64, 64), borderMode=cv2.BORDER_REFLECT)
    mask = ellipse_mask(FLOW_SIZE)
    out = EditTransfer()(frame, edited, reconstruction, crop_from_frame, 128, mask)
    # Outside the face box the frame is untouched.
    assert np.array_equal(out[:60], frame[:60]) and np.array_equal(out[:, :60], frame[:, :60])
    # In the mask's core the output is the frame moved by 4 px: compare with both candidates.
    core = (slice(120, 150), slice(112, 144))
    moved = np.roll(frame, 4, axis=1)
    error_moved = np.abs(out[core].astype(int) - moved[core]).mean()
    error_still = np.abs(out[core].astype(int) - frame[core]).mean()
    assert error_moved < 0.35 * error_still
    # The detail is the source's: sharp, not the 64 px face's blur.
    assert laplacian_variance(out, (112, 120, 144, 150)) > 0.7 * laplacian_variance(
        moved, (112, 120, 144, 150))


def test_resampling_only_where_the_face_moves_gives_the_same_frame():
    frame, crop_from_frame, reconstruction = _face_and_frame()
    # A local edit: only the lower middle of the face moves (a mouth), 2 px to the right.
    edited = reconstruction.copy()
    edited[38:52, 20:44] = reconstruction[38:52, 18:42]
    mask = ellipse_mask(FLOW_SIZE)
    args = (frame, edited, reconstruction, crop_from_frame, 128, mask)
    restricted = EditTransfer(restrict_to_motion=True)(*args)
    whole_box = EditTransfer(restrict_to_motion=False)(*args)
    assert not np.array_equal(restricted, frame)  # the edit did move pixels
    # the same frame, up to OpenCV's fixed-point rounding of the shifted field (±1 level)
    assert np.abs(restricted.astype(int) - whole_box).max() <= 1


def test_a_shift_too_small_to_move_a_pixel_leaves_it_as_it_is():
    """Flow under STILL_SHIFT is none: the frame is not resampled there (cubic resampling of
    a sharp texture by it changed pixels by a level or two), while the rest of the field
    moves the frame as before."""
    from vidinv.face.transfer import STILL_SHIFT, EditField

    frame, crop_from_frame, _ = _face_and_frame()
    flow = np.zeros((FLOW_SIZE, FLOW_SIZE, 2), np.float32)
    flow[:64, :, 0] = 0.9 * STILL_SHIFT   # upper half: a thin tail of the field
    flow[64:, :, 0] = 2.0                 # lower half: a real motion
    mask = np.ones((FLOW_SIZE, FLOW_SIZE), np.float32)
    out = EditTransfer().apply(frame, EditField(flow, None), crop_from_frame, 128, mask)
    upper, lower = (slice(64, 124), slice(64, 192)), (slice(132, 192), slice(64, 192))
    assert np.array_equal(out[upper], frame[upper])
    assert np.abs(out[lower].astype(int) - frame[lower]).mean() > 10
    tail = cv2.remap(frame, *np.meshgrid(np.arange(256, dtype=np.float32) + 0.9 * STILL_SHIFT,
                                         np.arange(256, dtype=np.float32)), cv2.INTER_CUBIC)
    assert not np.array_equal(tail[upper], frame[upper])  # what resampling along it would do


def test_residual_is_shading_limited_to_a_few_levels():
    from vidinv.face.transfer import SHADING_LIMIT

    frame, crop_from_frame, reconstruction = _face_and_frame()
    edited = reconstruction.copy()
    edited[36:48, 24:40] = np.clip(edited[36:48, 24:40].astype(int) - 60, 0, 255)  # darker mouth
    transfer = EditTransfer()
    out = transfer(frame, edited, reconstruction, crop_from_frame, 128, ellipse_mask(FLOW_SIZE))
    mouth = (slice(64 + 76, 64 + 92), slice(64 + 52, 64 + 76))
    darker = frame[mouth].astype(int).mean() - out[mouth].astype(int).mean()
    # the shading is carried, up to its limit (a small model's blotches never reach the frame)
    assert 0.5 * SHADING_LIMIT < darker <= SHADING_LIMIT + 1
    none = EditTransfer(residual_sigma=None)(frame, edited, reconstruction, crop_from_frame,
                                            128, ellipse_mask(FLOW_SIZE))
    assert abs(none[mouth].astype(int).mean() - frame[mouth].astype(int).mean()) < 1


def test_the_whole_motion_reaches_the_frame_not_a_damped_part_of_it():
    """A 3 px (of 64) lift of the lower face — a smile's size, down to the chin where the mask
    feathers — moves the frame's pixels by at least 0.9 of it (6 frame pixels). (The coarse
    DIS preset and the flow damped by the mask and blended by it again carried 4.5 px.)"""
    frame, crop_from_frame, reconstruction = _face_and_frame()
    # a small model's render is soft: little texture for the flow to lock onto
    reconstruction = cv2.GaussianBlur(reconstruction, (0, 0), 1.5)
    edited = reconstruction.copy()
    edited[44:60, 14:50] = cv2.warpAffine(reconstruction, np.float32([[1, 0, 0], [0, 1, -3]]),
                                          (64, 64), borderMode=cv2.BORDER_REFLECT)[44:60, 14:50]
    out = EditTransfer()(frame, edited, reconstruction, crop_from_frame, 128,
                         ellipse_mask(FLOW_SIZE))
    region = (slice(64 + 94, 64 + 114), slice(64 + 36, 64 + 92))

    def error(dy: float) -> float:
        moved = cv2.warpAffine(frame, np.float32([[1, 0, 0], [0, 1, -dy]]), (256, 256))
        return float(np.abs(out[region].astype(float) - moved[region]).mean())

    assert min(np.arange(0, 8.01, 0.25), key=error) >= 5.5


def test_the_models_texture_never_reaches_the_frame_and_an_unknown_face_gets_motion_only():
    """A model's own rendering of an appearance change (here teeth: a bright band with sharp
    gaps) is not pasted: at most a shading of :data:`SHADING_LIMIT` levels reaches the frame,
    without the band's texture."""
    from vidinv.face.transfer import SHADING_LIMIT, appearance_weight

    frame, crop_from_frame, reconstruction = _face_and_frame()
    edited = reconstruction.copy()
    band = np.full((4, 20, 3), 235, np.uint8)
    band[:, ::4] = 90
    edited[40:44, 22:42] = band
    mask = ellipse_mask(FLOW_SIZE)
    out = EditTransfer()(frame, edited, reconstruction, crop_from_frame, 128, mask)
    motion_only = EditTransfer()(frame, edited, reconstruction, crop_from_frame, 128, mask,
                                 appearance=0.0)
    teeth = (slice(64 + 80, 64 + 88), slice(64 + 46, 64 + 82))
    shading = out[teeth].astype(int) - motion_only[teeth].astype(int)
    assert 0.5 * SHADING_LIMIT < shading.mean() <= SHADING_LIMIT + 1
    # no texture of the band: the shading is smooth across the columns
    columns = shading.astype(float).mean(axis=(0, 2))
    assert columns.max() - columns.min() < 0.5 * SHADING_LIMIT
    # the weight: R equal to the source crop -> 1; R of someone else (other texture) -> 0
    source = frame[64:192, 64:192]
    assert appearance_weight(source, reconstruction) == 1.0
    assert appearance_weight(source, _textured(64, seed=7)) == 0.0


def test_smoothing_keeps_an_edges_motion_and_removes_ripples():
    """The normalised smoothing: a motion measured at an edge keeps (nearly) its size where a
    plain blur of the same width halves it, and an alternating ripple in flat skin is removed."""
    from vidinv.face.transfer import smooth_flow

    image = np.full((64, 64), 120, np.uint8)
    image[:, 32:] = 200                                  # one vertical edge at x = 32
    flow = np.zeros((64, 64, 2), np.float32)
    flow[:, 31:33, 0] = 3.0                              # motion measured at the edge only
    flow[:, 5:20, 1] = np.where(np.arange(5, 20) % 2, 1.0, -1.0)[None]   # ripple, flat skin
    smooth = smooth_flow(flow, image, sigma=4.0)
    plain = cv2.GaussianBlur(flow, (0, 0), 4.0)
    assert smooth[32, 32, 0] > 2.5 > 2 * plain[32, 32, 0]
    assert np.abs(smooth[:, 8:17, 1]).max() < 0.2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 12 frames of the real clip, losslessly encoded."""
    return real_clip_head(tmp_path_factory.mktemp("clip") / "talk.mp4", 12, crf=0)


def _run(model: Path, clip: Path, out: Path, strength: float, paste: str) -> list[np.ndarray]:
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    config = PipelineConfig().with_overrides([f"face.paste={paste}", "output.crf=0"])
    images: list[np.ndarray] = []
    renders: list[tuple] = []
    process_video(clip, out, bundle, config, resolve_editor(bundle, "smile", strength),
                  progress=False, on_frame=lambda f: (images.append(f.image),
                                                      renders.append((f.rendered,
                                                                      f.reconstruction,
                                                                      f.slots[0].carried))))
    return images, renders


def psnr_mean(images: list[np.ndarray], references: list[np.ndarray]) -> float:
    from vidinv.metrics.image import psnr

    return float(np.mean([psnr(a, b) for a, b in zip(images, references, strict=True)]))


def test_pipeline_strength_zero_gives_back_the_input_in_transfer_mode(model, clip, tmp_path):
    from vidinv.video.reader import VideoReader

    source = [f.image for f in VideoReader(clip)]
    images, renders = _run(model, clip, tmp_path / "s0.mp4", 0.0, "transfer")
    assert all(np.array_equal(a, b) for a, b in zip(images, source, strict=True))
    # strength 0: R is not rendered separately, it is E
    assert all(e is r for e, r, _ in renders)
    rendered, _ = _run(model, clip, tmp_path / "render.mp4", 0.0, "render")
    assert not np.array_equal(rendered[5], source[5])  # render mode pastes the model's face


def test_pipeline_transfer_keeps_the_source_where_render_pastes_the_model(model, clip, tmp_path):
    from vidinv.video.reader import VideoReader

    source = [f.image for f in VideoReader(clip)]
    transfer, renders = _run(model, clip, tmp_path / "t.mp4", 3.0, "transfer")
    # the key frames (face.key_frames, on by default) are rendered, E and R; the frames
    # between them are not, and carry the key frame's field
    assert all(r is not None and not np.array_equal(e, r) for e, r, carried in renders
               if not carried)
    assert all(e is None for e, _, carried in renders if carried)
    render, _ = _run(model, clip, tmp_path / "r.mp4", 3.0, "render")
    box = (60, 30, 120, 110)  # the face in the 176×144 clip
    sharp_in = np.mean([laplacian_variance(s, box) for s in source])
    sharp_transfer = np.mean([laplacian_variance(t, box) for t in transfer])
    assert sharp_transfer > 0.7 * sharp_in
    # The untrained model renders noise: render mode pastes it, transfer only moves the
    # source's pixels, so the frame stays close to the input.
    assert psnr_mean(transfer, source) > psnr_mean(render, source) + 3
