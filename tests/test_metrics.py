"""Image metrics, LPIPS loading, dlib identity embeddings, temporal metrics, the collector."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from tests.media import real_clip_path
from vidinv.frame import Frame
from vidinv.metrics.image import (
    crop_scores,
    image_scores,
    mean_psnr,
    mse,
    psnr,
    psnr_of_mean_mse,
    ssim,
)
from vidinv.metrics.temporal import (
    LatentJitter,
    WarpErrorMeter,
    tg_id,
    tl_id,
    track_jitter,
    warp_error,
)

RNG = np.random.default_rng(0)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture with values in [20, 200] (room for ±brightness changes)."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3).astype(np.float64)
    low, high = blurred.min(), blurred.max()
    return (20 + (blurred - low) / (high - low) * 180).round().astype(np.uint8)


# --- image metrics ---------------------------------------------------------------------------


def test_identical_images_are_perfect():
    image = _texture(40, 50)
    scores = image_scores(image, image)
    assert scores.ssim == 1.0 and scores.mse == 0.0 and scores.mse_pm1 == 0.0
    assert scores.psnr == math.inf


def test_known_offset_gives_the_expected_mse_and_psnr():
    image = _texture(40, 50)
    shifted = image + np.uint8(10)  # no overflow: values ≤ 200
    assert mse(image, shifted) == pytest.approx((10 / 255) ** 2)
    assert psnr(image, shifted) == pytest.approx(20 * math.log10(255 / 10))
    assert image_scores(image, shifted).mse_pm1 == pytest.approx(4 * (10 / 255) ** 2)


def test_ssim_equals_skimage_also_with_a_local_change():
    from skimage.metrics import structural_similarity

    a = RNG.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + RNG.integers(-50, 50, a.shape), 0, 255).astype(np.uint8)
    local = a.copy()
    local[30:50, 0:40] = b[30:50, 0:40]  # touches the left edge
    for other in (b, local):
        expected = structural_similarity(a / 255.0, other / 255.0, channel_axis=-1,
                                         data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert ssim(a, other) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a[:8, :8], b[:8, :8])


def test_crop_scores_compare_at_the_generator_resolution():
    aligned = _texture(128, 128)
    rendered = cv2.resize(aligned, (32, 32), interpolation=cv2.INTER_AREA)
    assert crop_scores(aligned, rendered).psnr == math.inf
    # a torch [3,R,R] face in [-1,1] is accepted too
    tensor = torch.from_numpy(rendered).permute(2, 0, 1).float() / 127.5 - 1
    assert crop_scores(aligned, tensor).mse < 1e-10


def test_psnr_aggregation_keeps_infinity_out_of_the_mean():
    assert mean_psnr([20.0, math.inf, 30.0, None]) == (25.0, 1)
    assert mean_psnr([math.inf, math.inf]) == (math.inf, 2)
    assert mean_psnr([None]) == (None, 0)
    assert psnr_of_mean_mse([0.0, 0.01]) == pytest.approx(10 * math.log10(1 / 0.005))
    assert psnr_of_mean_mse([0.0]) == math.inf


# --- LPIPS -----------------------------------------------------------------------------------


def _save_random_lpips(folder, net: str):
    from vidinv.metrics.lpips import Lpips

    model = Lpips(net)
    backbone = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    backbone["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files have these; ignored
    lins = {f"lin{i}.model.1.weight": torch.rand_like(conv.weight)
            for i, conv in enumerate(model.lins)}
    torch.save(backbone, folder / f"{net}_backbone.pth")
    torch.save(lins, folder / f"{net}_lin.pth")
    return folder / f"{net}_backbone.pth", folder / f"{net}_lin.pth"


def test_lpips_is_unavailable_without_weights_and_needs_both_files(monkeypatch, tmp_path):
    from vidinv.metrics.errors import LpipsWeightsError
    from vidinv.metrics.lpips import ENV_BACKBONE, ENV_LIN, lpips_from_paths

    monkeypatch.delenv(ENV_BACKBONE, raising=False)
    monkeypatch.delenv(ENV_LIN, raising=False)
    assert lpips_from_paths() is None
    with pytest.raises(LpipsWeightsError, match="needs both files"):
        lpips_from_paths(backbone=tmp_path / "vgg.pth")
    with pytest.raises(LpipsWeightsError, match="no such"):
        lpips_from_paths(tmp_path / "missing.pth", tmp_path / "missing_lin.pth")


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_from_local_files(monkeypatch, tmp_path, net):
    from vidinv.metrics.errors import LpipsWeightsError
    from vidinv.metrics.lpips import ENV_BACKBONE, ENV_LIN, load_lpips, lpips_from_paths

    torch.manual_seed(0)
    backbone, lin = _save_random_lpips(tmp_path, net)
    monkeypatch.setenv(ENV_BACKBONE, str(backbone))
    monkeypatch.setenv(ENV_LIN, str(lin))
    metric = lpips_from_paths(size=64)
    assert metric is not None and net in metric.name
    a, b = _texture(64, 64, 1), _texture(64, 64, 2)
    assert metric(a, a) == 0.0
    assert metric(a, b) > 0 and metric(a, b) == pytest.approx(metric(b, a), rel=1e-5)
    # a backbone of the other kind names the missing key
    other = "vgg16" if net == "alexnet" else "alexnet"
    other_backbone, _ = _save_random_lpips(tmp_path, other)
    with pytest.raises(LpipsWeightsError, match="features"):
        load_lpips(other_backbone, lin)


# An independent LPIPS v0.1, written from the ``lpips`` package's source (lpips.py,
# pretrained_networks.py; its torchvision backbone cannot be installed beside the CPU torch): it
# reads the same two files vidinv reads and runs one image at a time, functionally.
# torchvision ``features`` layouts as (index, kind, conv stride, conv padding) and the index
# ranges lpips slices them into (relu1..relu5 for alexnet, relu1_2..relu5_3 for vgg16).
_TV_ALEXNET = [(0, "conv", 4, 2), (1, "relu"), (2, "pool3"), (3, "conv", 1, 2), (4, "relu"),
               (5, "pool3"), (6, "conv", 1, 1), (7, "relu"), (8, "conv", 1, 1), (9, "relu"),
               (10, "conv", 1, 1), (11, "relu")]
_TV_ALEXNET_SHAPES = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3),
                      10: (256, 256, 3)}
_LPIPS_SLICES = {"alexnet": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
                 "vgg16": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]}


def _tv_vgg16() -> tuple[list[tuple], dict[int, tuple[int, int, int]]]:
    layers, shapes, index, channels = [], {}, 0, 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512):
        if width == "M":
            layers.append((index, "pool2"))
            index += 1
        else:
            layers += [(index, "conv", 1, 1), (index + 1, "relu")]
            shapes[index] = (width, channels, 3)
            channels, index = width, index + 2
    return layers, shapes


def _reference_lpips(net: str, backbone: dict, heads: dict, x: torch.Tensor,
                     y: torch.Tensor) -> float:
    """lpips.LPIPS(net, version='0.1')(x, y) for one pair [1,3,H,W] in [-1,1]."""
    import torch.nn.functional as F

    layers = _TV_ALEXNET if net == "alexnet" else _tv_vgg16()[0]
    by_index = {layer[0]: layer for layer in layers}
    shift = torch.tensor([-.030, -.088, -.188])[None, :, None, None]  # lpips.ScalingLayer
    scale = torch.tensor([.458, .448, .450])[None, :, None, None]

    def taps(image: torch.Tensor) -> list[torch.Tensor]:
        h, out = (image - shift) / scale, []
        for start, end in _LPIPS_SLICES[net]:
            for index in range(start, end):
                kind = by_index[index][1]
                if kind == "conv":
                    h = F.conv2d(h, backbone[f"features.{index}.weight"],
                                 backbone[f"features.{index}.bias"],
                                 stride=by_index[index][2], padding=by_index[index][3])
                elif kind == "relu":
                    h = F.relu(h)
                else:
                    h = F.max_pool2d(h, 3 if kind == "pool3" else 2, 2)
            out.append(h)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(taps(x), taps(y), strict=True)):
        a = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)  # normalize_tensor
        b = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
        weight = heads[f"lin{k}.model.1.weight"]  # NetLinLayer: a 1x1 conv, no bias
        total += float((weight[0, :, :, :] * (a - b)[0] ** 2).sum(dim=0).mean())
    return total


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_matches_an_independent_lpips_v01_on_random_weights(tmp_path, net):
    from vidinv.metrics.lpips import load_lpips

    generator = torch.Generator().manual_seed(1)
    shapes = _TV_ALEXNET_SHAPES if net == "alexnet" else _tv_vgg16()[1]
    backbone = {"classifier.1.weight": torch.zeros(4, 4)}  # as in torchvision files: ignored
    for index, (out_c, in_c, kernel) in shapes.items():
        fan_in = in_c * kernel * kernel
        backbone[f"features.{index}.weight"] = torch.randn(
            out_c, in_c, kernel, kernel, generator=generator) * (2 / fan_in) ** 0.5
        backbone[f"features.{index}.bias"] = 0.1 * torch.randn(out_c, generator=generator)
    widths = [shapes[last_conv][0] for last_conv in
              [max(i for i in shapes if i < end) for _, end in _LPIPS_SLICES[net]]]
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
             for k, c in enumerate(widths)}  # lpips's trained heads are non-negative
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(heads, tmp_path / "lin.pth")
    model = load_lpips(tmp_path / "backbone.pth", tmp_path / "lin.pth")

    x = torch.rand(3, 3, 48, 48, generator=generator) * 2 - 1
    y = (x + 0.5 * torch.randn(3, 3, 48, 48, generator=generator)).clamp(-1, 1)
    y[2] = torch.rand(3, 48, 48, generator=generator) * 2 - 1  # one pair unrelated
    with torch.no_grad():
        ours = model(x, y)
        expected = torch.tensor([_reference_lpips(net, backbone, heads, x[i:i + 1], y[i:i + 1])
                                 for i in range(3)])
    assert ours.shape == (3,) and bool((expected > 0.01).all()), expected
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6), (ours, expected)
    assert len(set(expected.tolist())) == 3  # three different distances, matched each


# --- identity --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_faces():
    """(frames 0 and 60 of the real clip, their FFHQ-aligned 256 px crops)."""
    from vidinv.face.align import align_face
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.video.reader import VideoReader

    wanted = {0: None, 60: None}
    for frame in VideoReader(real_clip_path()):
        if frame.index in wanted:
            wanted[frame.index] = frame.image
        if frame.index >= 60:
            break
    detector = MediaPipeLandmarks()
    crops = [align_face(image, detector.detect(image)[0], 256)[0] for image in wanted.values()]
    detector.close()
    return list(wanted.values()), crops


@pytest.fixture(scope="module")
def embedder():
    from vidinv.metrics.identity import IdentityEmbedder

    return IdentityEmbedder()


def test_identity_of_the_same_crop_twice_and_of_two_frames(embedder, clip_faces):
    from vidinv.metrics.identity import (
        EMBEDDING_NAME,
        SAME_PERSON_DISTANCE,
        cosine_similarity,
        euclidean_distance,
    )

    frames, (crop0, crop60) = clip_faces
    assert embedder.name == EMBEDDING_NAME
    first, again = embedder.embed(crop0, aligned=True), embedder.embed(crop0.copy(), aligned=True)
    assert first.shape == (128,)
    assert cosine_similarity(first, again) == pytest.approx(1.0, abs=1e-12)
    assert euclidean_distance(first, again) == pytest.approx(0.0, abs=1e-12)
    later = embedder.embed(crop60, aligned=True)
    assert cosine_similarity(first, later) > 0.9
    assert euclidean_distance(first, later) < SAME_PERSON_DISTANCE
    # the whole 176×144 frame: detected (after enlarging), the same person
    detected = embedder.embed(frames[0])
    assert detected is not None and euclidean_distance(detected, first) < SAME_PERSON_DISTANCE


def test_identity_of_a_flat_image_is_none(embedder):
    from vidinv.metrics.identity import cosine_similarity

    flat = np.full((128, 128, 3), 127, np.uint8)
    assert embedder.embed(flat) is None
    assert embedder.embed(flat, aligned=True) is None
    assert embedder.embed(_texture(128, 128)) is None  # no face to detect
    assert cosine_similarity(None, np.ones(128)) is None


# --- temporal --------------------------------------------------------------------------------


def test_warp_error_is_zero_for_a_static_video_and_output_equal_to_source():
    static = [_texture(60, 80)] * 5
    result = warp_error(static, static)
    assert result.error == 0.0 and result.source_error == 0.0 and result.valid_fraction == 1.0


def test_warp_error_with_the_source_flow_of_a_moving_video():
    texture = _texture(120, 200)
    # the scene moves 2 px/frame to the left
    source = [texture[10:90, 2 * t: 2 * t + 120].copy() for t in range(8)]
    same = warp_error(source, source)
    assert same.error < 2e-3 and same.error == same.source_error
    assert same.valid_fraction > 0.9
    # output shaken by one pixel vertically every other frame: the flow of the source does
    # not explain that motion
    shaken = [texture[10 + t % 2: 90 + t % 2, 2 * t: 2 * t + 120].copy() for t in range(8)]
    jittered = warp_error(source, shaken)
    assert jittered.error > 10 * same.error and jittered.error > 5e-3


def test_warp_error_of_a_flicker_is_its_amplitude_and_regions_count_apart():
    static = [_texture(60, 80)] * 6
    flicker = [frame + np.uint8(12 if t % 2 else 0) for t, frame in enumerate(static)]
    assert warp_error(static, flicker).error == pytest.approx(12 / 255, abs=1e-7)
    # flicker only in the right half: the left-half region sees none of it
    half = [frame.copy() for frame in static]
    for t in range(1, 6, 2):
        half[t][:, 40:] += np.uint8(12)
    meter = WarpErrorMeter()
    left = np.zeros((60, 80), bool)
    left[:, :40] = True
    results = [meter.update(s, o, {"left": left}) for s, o in zip(static, half, strict=True)]
    assert results[0] is None
    assert all(r["left"].error == 0.0 for r in results[1:])
    assert all(r["frame"].error == pytest.approx(6 / 255, abs=1e-7) for r in results[1:])


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def test_tl_id_and_tg_id():
    face = RNG.normal(size=128) * 0.09  # dlib descriptors have a norm of about 1
    constant = [face] * 6
    for similarity in ("distance", "cosine"):
        assert tl_id(constant, constant, similarity=similarity) == pytest.approx(1.0)
        assert tg_id(constant, constant, similarity=similarity) == pytest.approx(1.0)
    # the output alternates between two faces at descriptor distance 0.3: s = 1 − 0.3/0.6
    near = face + 0.3 * _unit(RNG.normal(size=128))
    output = [face, near, face, near]
    assert tl_id(constant[:4], output) == pytest.approx(0.5)
    assert tg_id(constant[:4], output) == pytest.approx((8 * 0.5 + 4) / 12)  # 8 of 12 differ
    # … and at distance 0.9, past dlib's same-person line: s = 0, while the cosine stays high
    far = face + 0.9 * _unit(RNG.normal(size=128))
    c = float(_unit(face) @ _unit(far))
    swapped = [face, far, face, far]
    assert tl_id(constant[:4], swapped) == 0.0
    assert tl_id(constant[:4], swapped, similarity="cosine") == pytest.approx(c)
    assert tg_id(constant[:4], swapped, similarity="cosine") == pytest.approx((8 * c + 4) / 12)
    # per-pair ratios: an output as (in)consistent as its source scores 1
    assert tl_id(output, output) == pytest.approx(1.0)
    # source pairs of different people (s = 0) have no ratio: left out
    assert tl_id(swapped, swapped) is None
    assert tg_id(swapped, swapped) == pytest.approx(1.0)  # only the same-face pairs count
    # frames without a face break adjacency and leave the global pairs
    with_gap = [face, face, None, face]
    assert tl_id(with_gap, with_gap) == pytest.approx(1.0)
    assert tl_id([face, None], [face, face]) is None
    assert tg_id([face], [face]) is None
    assert tg_id(constant[:4], output, block=3) == pytest.approx((8 * 0.5 + 4) / 12)  # blocks


def test_identity_tells_another_person_apart_and_the_same_person_alike(embedder, clip_faces):
    """The real clip's face against scikit-image's astronaut (another person): dlib's
    distance is past 0.6 and s = 0, although the cosine of the two is ~0.8; two frames of the
    clip are the same person. TL-ID of an output that swaps person every frame falls to 0."""
    from skimage.data import astronaut

    from vidinv.metrics.identity import (
        cosine_similarity,
        distance_similarity,
        euclidean_distance,
        same_person,
    )

    frames, _ = clip_faces
    first, later = embedder.embed(frames[0]), embedder.embed(frames[1])
    other = embedder.embed(np.ascontiguousarray(astronaut()))
    assert other is not None
    different = euclidean_distance(first, other)
    assert different > 0.6 and not same_person(different)
    assert distance_similarity(different) == 0.0
    assert cosine_similarity(first, other) > 0.7  # why the cosine could not tell them apart
    alike = euclidean_distance(first, later)
    assert alike < 0.6 and same_person(alike) and distance_similarity(alike) > 0.1

    source = [first, later, first, later]
    assert tl_id(source, source) == pytest.approx(1.0)
    swapped = [first, other, first, other]
    assert tl_id(source, swapped) == 0.0
    assert tl_id(source, swapped, similarity="cosine") > 0.7
    assert tg_id(source, swapped) < 0.5 * tg_id(source, swapped, similarity="cosine")


def test_track_and_latent_jitter():
    line = {i: np.array([2.0 * i, 5.0]) for i in range(6)}
    assert track_jitter(line) == 0.0  # constant speed
    shaken = {i: np.array([0.0, 1.0 if i % 2 else 0.0]) for i in range(5)}
    assert track_jitter(shaken) == pytest.approx(2.0)  # second differences ±2
    assert track_jitter({0: (0, 0), 1: (0, 0), 5: (9, 9)}) is None  # no 3 consecutive frames
    jitter = LatentJitter()
    for index, value in ((0, 0.0), (1, 1.0), (2, 3.0), (4, 100.0), (5, 101.0)):
        jitter.update(index, torch.full((2, 2), value))
    assert jitter.steps == [2.0, 4.0, 2.0] and jitter.value == pytest.approx(8 / 3)


# --- the collector ---------------------------------------------------------------------------


def _frame(index: int, image: np.ndarray, face: bool) -> Frame:
    frame = Frame(index=index, image=image.copy())
    frame.original = image
    if face:
        scale = 128 / 40  # the crop is image[10:50, 20:60] at 128 px
        crop_from_frame = np.array([[scale, 0, -20 * scale], [0, scale, -10 * scale], [0, 0, 1]])
        aligned = cv2.resize(image[10:50, 20:60], (128, 128), interpolation=cv2.INTER_CUBIC)
        frame.face_found = True
        frame.crop_from_frame = crop_from_frame
        frame.aligned = aligned
        frame.rendered = cv2.resize(aligned, (32, 32), interpolation=cv2.INTER_AREA)
        frame.w = torch.zeros(4, 512)
    else:
        frame.face_found = False
    return frame


def test_collector_on_a_perfect_reconstruction():
    from vidinv.evaluate.collect import FRAME_COLUMNS, MetricsCollector

    collector = MetricsCollector(embedder=None, lpips=None)
    image = _texture(60, 80)
    for index in range(5):
        collector(_frame(index, image, face=index != 2))
    assert [row["face"] for row in collector.rows] == [True, True, False, True, True]
    assert set(collector.rows[0]) == set(FRAME_COLUMNS)
    summary = collector.summary()
    assert summary["frames"] == 5 and summary["face_frames"] == 4
    assert summary["crop_psnr"] == math.inf and summary["crop_psnr_inf_frames"] == 4
    assert summary["crop_ssim"] == 1.0 and summary["frame_mse"] == 0.0
    assert summary["warp_error"] == 0.0 and summary["warp_error_face"] == 0.0
    assert summary["crop_jitter"] is None  # no three consecutive face frames
    assert summary["latent_jitter"] == 0.0
    assert summary["id_distance"] is None and summary["id_same"] is None
    assert summary["tl_id"] is None and summary["lpips"] is None
    with pytest.raises(ValueError, match="in order"):
        collector(_frame(9, image, face=True))
