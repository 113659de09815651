"""Sanity tests of the test-only rosinality reference (shapes, determinism, every weight used)."""

from __future__ import annotations

import pytest
import torch

try:
    from tests.rosinality_reference import (
        random_rosinality_state,
        rosinality_features,
        rosinality_forward,
        rosinality_mapping,
    )
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from rosinality_reference import (
        random_rosinality_state,
        rosinality_features,
        rosinality_forward,
        rosinality_mapping,
    )

SIZE = 16
STYLE_DIM = 16
N_MLP = 2
CHANNELS = {4: 8, 8: 8, 16: 4}
N_LATENT = 6  # 2 * log2(16) - 2
NUM_LAYERS = 5  # (log2(16) - 2) * 2 + 1


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_rosinality_state(SIZE, STYLE_DIM, N_MLP, CHANNELS, seed=0)


def _z(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, STYLE_DIM, generator=torch.Generator().manual_seed(1))


def _image(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    w = rosinality_mapping(state, z)
    return rosinality_forward(state, w[:, None].repeat(1, N_LATENT, 1))


def test_state_keys_and_shapes(state):
    expected = {
        "style.1.weight": (16, 16),
        "style.2.bias": (16,),
        "input.input": (1, 8, 4, 4),
        "conv1.conv.weight": (1, 8, 8, 3, 3),
        "conv1.conv.modulation.weight": (8, 16),
        "conv1.conv.modulation.bias": (8,),
        "conv1.noise.weight": (1,),
        "conv1.activate.bias": (8,),
        "to_rgb1.conv.weight": (1, 3, 8, 1, 1),
        "to_rgb1.bias": (1, 3, 1, 1),
        "convs.0.conv.weight": (1, 8, 8, 3, 3),
        "convs.0.conv.blur.kernel": (4, 4),
        "convs.2.conv.weight": (1, 4, 8, 3, 3),
        "convs.3.conv.weight": (1, 4, 4, 3, 3),
        "to_rgbs.1.conv.weight": (1, 3, 4, 1, 1),
        "to_rgbs.1.upsample.kernel": (4, 4),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_4": (1, 1, 16, 16),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "convs.1.conv.blur.kernel" not in state  # only the up-sampling convs blur
    assert "to_rgb1.upsample.kernel" not in state
    assert "style.3.weight" not in state and "noises.noise_5" not in state
    # mapping + const + 5 styled convs (5 tensors each) + 2 blur kernels
    # + to_rgb1 (4) + 2 to_rgbs (5 each, incl. upsample kernel) + noise buffers
    assert len(state) == 2 * N_MLP + 1 + 5 * 5 + 2 + 4 + 2 * 5 + NUM_LAYERS
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps) / 64 * 4
    torch.testing.assert_close(state["convs.2.conv.blur.kernel"], kernel, rtol=0, atol=0)
    torch.testing.assert_close(state["to_rgbs.0.upsample.kernel"], kernel, rtol=0, atol=0)


def test_default_channels_and_seed():
    a = random_rosinality_state(8, style_dim=8, n_mlp=1)
    assert tuple(a["input.input"].shape) == (1, 512, 4, 4)
    assert tuple(a["convs.1.conv.weight"].shape) == (1, 512, 512, 3, 3)
    b = random_rosinality_state(8, style_dim=8, n_mlp=1)
    c = random_rosinality_state(8, style_dim=8, n_mlp=1, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input.input"], c["input.input"])


def test_shapes_and_determinism(state):
    z = _z(3)
    w = rosinality_mapping(state, z)
    assert w.shape == (3, STYLE_DIM)
    img = _image(state, z)
    assert img.shape == (3, 3, SIZE, SIZE)
    assert torch.isfinite(img).all()
    torch.testing.assert_close(_image(state, z), img, rtol=0, atol=0)
    # per-sample independence: the fused grouped conv must not mix the batch
    torch.testing.assert_close(_image(state, z[1:2]), img[1:2], rtol=1e-5, atol=1e-5)


def test_explicit_noises_default_to_stored(state):
    ws = rosinality_mapping(state, _z())[:, None].repeat(1, N_LATENT, 1)
    stored = [state[f"noises.noise_{i}"] for i in range(NUM_LAYERS)]
    torch.testing.assert_close(
        rosinality_forward(state, ws, stored), rosinality_forward(state, ws), rtol=0, atol=0
    )
    other = [torch.randn_like(n) for n in stored]
    assert not torch.allclose(rosinality_forward(state, ws, other), rosinality_forward(state, ws))


def test_features(state):
    ws = rosinality_mapping(state, _z())[:, None].repeat(1, N_LATENT, 1)
    shapes = [(8, 4), (8, 4), (8, 8), (8, 8), (4, 16), (4, 16)]
    feats = [rosinality_features(state, ws, k) for k in range(len(shapes))]
    for f, (c, r) in zip(feats, shapes, strict=True):
        assert f.shape == (2, c, r, r)
    torch.testing.assert_close(feats[0], state["input.input"].repeat(2, 1, 1, 1))
    with pytest.raises(IndexError):
        rosinality_features(state, ws, len(shapes))


def test_every_tensor_is_used(state):
    z = _z()
    base = _image(state, z)
    gen = torch.Generator().manual_seed(2)
    for key, value in state.items():
        perturbed = dict(state)
        delta = torch.randn(value.shape, generator=gen) * (0.05 * value.abs().mean() + 1e-3)
        perturbed[key] = value + delta
        diff = (_image(perturbed, z) - base).abs().max().item()
        assert diff > 1e-4, f"perturbing {key} did not change the output ({diff})"
