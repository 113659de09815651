"""The StyleGAN2 generator: parity with rosinality's forward, feature-tensor semantics, formats."""

from __future__ import annotations

import argparse

import pytest
import torch

from tests.rosinality_reference import (
    random_rosinality_state,
    rosinality_features,
    rosinality_forward,
    rosinality_mapping,
)
from vidinv.errors import CheckpointError, InputFileError
from vidinv.models import StyleGAN2Generator, load_generator, save_generator
from vidinv.models.generator_io import LATENT_AVG_SAMPLES, LATENT_AVG_SEED

TINY_CHANNELS = {4: 32, 8: 32, 16: 32, 32: 16}


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 2e-6) -> bool:
    """Max-abs difference within ``rel`` of the reference's magnitude (float32 round-off)."""
    scale = max(1.0, expected.abs().max().item())
    return (actual - expected).abs().max().item() <= rel * scale


@pytest.fixture(scope="module")
def rosinality_state() -> dict[str, torch.Tensor]:
    return random_rosinality_state(32, channels=TINY_CHANNELS, n_mlp=2, seed=1)


@pytest.fixture(scope="module")
def rosinality_file(tmp_path_factory, rosinality_state) -> tuple:
    path = tmp_path_factory.mktemp("ros") / "g.pt"
    latent_avg = torch.randn(512)
    torch.save({"g_ema": rosinality_state, "latent_avg": latent_avg}, path)
    return path, latent_avg


def test_rosinality_checkpoint_matches_reference_forward(rosinality_file, rosinality_state):
    path, latent_avg = rosinality_file
    generator = load_generator(path)
    assert generator.resolution == 32 and generator.n_latent == 8
    assert torch.equal(generator.latent_avg, latent_avg)
    ws = torch.randn(3, generator.n_latent, 512, generator=torch.Generator().manual_seed(0))
    image = generator.synthesis(ws)
    reference = rosinality_forward(rosinality_state, ws)
    assert image.shape == (3, 3, 32, 32)
    assert _close(image, reference)
    z = torch.randn(4, 512)
    assert torch.allclose(generator.mapping(z), rosinality_mapping(rosinality_state, z),
                          atol=1e-6)


def test_default_channel_table_matches_reference():
    state = random_rosinality_state(64, n_mlp=2, seed=2)  # rosinality's 512-channel table
    from vidinv.models.generator_io import generator_from_rosinality_state

    generator = generator_from_rosinality_state(state, torch.zeros(512), "fixture")
    assert generator.config["channel_multiplier"] == 2
    ws = torch.randn(1, generator.n_latent, 512)
    with torch.no_grad():
        assert _close(generator.synthesis(ws), rosinality_forward(state, ws), rel=4e-6)


def test_features_follow_the_official_fse_indexing(rosinality_file, rosinality_state):
    generator = load_generator(rosinality_file[0])
    ws = torch.randn(2, generator.n_latent, 512)
    for k in range(generator.num_layers):
        features = generator.features(ws, k)
        assert tuple(features.shape[1:]) == generator.synthesis.feature_shape(k)
        assert _close(features, rosinality_features(rosinality_state, ws, k))
    assert generator.synthesis.feature_shape(5) == (32, 16, 16)  # the output of convs[3]


def test_own_features_reproduce_the_image_at_every_k(rosinality_file):
    generator = load_generator(rosinality_file[0])
    ws = torch.randn(2, generator.n_latent, 512)
    image = generator.synthesis(ws)
    for k in range(generator.num_layers):
        restarted = generator.synthesis(ws, features=generator.features(ws, k), k=k)
        assert torch.allclose(restarted, image, atol=1e-5), k


def test_rgb_skip_before_k_comes_from_the_w_path(rosinality_file):
    generator = load_generator(rosinality_file[0])
    ws = torch.randn(1, generator.n_latent, 512)
    other = ws.clone()
    other[:, :5] = torch.randn(1, 5, 512)  # codes of layers 0..4 only
    features = torch.randn(1, *generator.synthesis.feature_shape(5))
    # With the feature tensor fixed, early codes still reach the image through the RGB skip.
    assert not torch.allclose(generator.synthesis(ws, features=features, k=5),
                              generator.synthesis(other, features=features, k=5))
    # Silence the ToRGBs at 4, 8 and 16 px: now the early codes have no way in.
    for to_rgb in generator.synthesis.to_rgbs[:3]:
        to_rgb.weight.zero_()
        to_rgb.bias.zero_()
    assert torch.allclose(generator.synthesis(ws, features=features, k=5),
                          generator.synthesis(other, features=features, k=5), atol=1e-6)


def test_demodulated_layers_ignore_style_scale():
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval().requires_grad_(False)
    ws = torch.randn(1, generator.n_latent, 512)
    image = generator.synthesis(ws)
    for layer in generator.synthesis.layers:  # the fp16-safe path: styles ×1e4
        layer.affine.weight.mul_(1e4)
        layer.affine.bias.mul_(1e4)
    assert torch.allclose(generator.synthesis(ws), image, atol=1e-4)


def test_bfloat16_render_stays_finite():
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval().requires_grad_(False)
    ws = torch.randn(1, generator.n_latent, 512)
    for layer in generator.synthesis.layers:
        layer.affine.bias.fill_(300.0)  # styles far outside half-precision comfort
    reference = generator.synthesis(ws)
    low = generator.to(torch.bfloat16).synthesis(ws.to(torch.bfloat16)).float()
    assert torch.isfinite(low).all()
    assert (low - reference).abs().mean() < 0.05 * reference.abs().mean()


def test_weight_cache_follows_parameter_updates():
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval().requires_grad_(False)
    ws = torch.randn(1, generator.n_latent, 512)
    before = generator.synthesis(ws)
    generator.synthesis.layers[3].weight.mul_(0.5)
    after = generator.synthesis(ws)
    fresh = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval()
    fresh.load_state_dict(generator.state_dict())
    assert not torch.allclose(before, after)
    assert torch.equal(after, fresh.synthesis(ws))


def test_native_round_trip_is_exact(tmp_path, rosinality_file):
    generator = load_generator(rosinality_file[0])
    path = save_generator(generator, tmp_path / "g.safetensors")
    again = load_generator(path)
    assert again.config == generator.config
    ws = torch.randn(2, generator.n_latent, 512)
    assert torch.equal(again.synthesis(ws), generator.synthesis(ws))
    assert not list(tmp_path.glob("*.tmp"))


def test_training_checkpoint_without_latent_avg(tmp_path, rosinality_state):
    path = tmp_path / "010000.pt"
    torch.save({"g": rosinality_state, "d": {}, "g_ema": rosinality_state, "g_optim": {},
                "d_optim": {}, "args": argparse.Namespace(size=32)}, path)
    generator = load_generator(path)
    z = torch.randn(LATENT_AVG_SAMPLES, 512,
                    generator=torch.Generator().manual_seed(LATENT_AVG_SEED))
    expected = rosinality_mapping(rosinality_state, z).mean(0)
    assert torch.allclose(generator.latent_avg, expected, atol=1e-4)


# --- bad input -----------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputFileError) as error:
        load_generator(tmp_path / "nope.pt")
    assert "no such file" in _one_line(error)
    with pytest.raises(InputFileError, match="folder"):
        load_generator(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"hello, not a model at all", "not a checkpoint"),
    (b"PK\x03\x04" + b"\x00" * 40, "truncated or corrupt"),
])
def test_garbage_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_generator(path)
    assert message in _one_line(error)


def test_truncated_checkpoints(tmp_path, rosinality_file):
    for source in (rosinality_file[0],
                   save_generator(load_generator(rosinality_file[0]), tmp_path / "n.safetensors")):
        data = source.read_bytes()
        cut = tmp_path / f"cut{source.suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as error:
            load_generator(cut)
        _one_line(error)


def test_checkpoint_of_another_kind(tmp_path):
    path = tmp_path / "enc.pth"
    torch.save({"content_layer.0.weight": torch.ones(3), "styles.0.weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="Feature-Style Encoder"):
        load_generator(path)


def test_unknown_key_and_shape_mismatch(tmp_path, rosinality_state):
    extra = dict(rosinality_state, **{"convs.0.mystery": torch.ones(1)})
    torch.save({"g_ema": extra}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError) as error:
        load_generator(tmp_path / "extra.pt")
    assert "convs.0.mystery" in _one_line(error)

    bad = dict(rosinality_state)
    bad["convs.1.activate.bias"] = torch.zeros(7)
    torch.save({"g_ema": bad}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError) as error:
        load_generator(tmp_path / "shape.pt")
    assert "synthesis.layers.2.bias" in _one_line(error) and "(7,)" in _one_line(error)


def test_pickled_code_in_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "payload": argparse.ArgumentParser}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(path)


# --- NVIDIA StyleGAN2-ADA pickles ------------------------------------------------------------


def _nvidia_kwargs(conv_clamp: float | None) -> dict:
    return {"z_dim": 512, "w_dim": 512, "c_dim": 0, "img_resolution": 32, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "synthesis_kwargs": {"channel_base": 512, "channel_max": 32, "num_fp16_res": 4,
                                 "conv_clamp": conv_clamp}}


def test_nvidia_pickle_renders_like_the_same_weights_in_rosinality_format(
        tmp_path, rosinality_file, rosinality_state):
    from tests.nvidia_fixture import write_nvidia_pickle

    path, latent_avg = rosinality_file
    pickle_path = tmp_path / "network-snapshot.pkl"
    write_nvidia_pickle(pickle_path, rosinality_state, latent_avg, _nvidia_kwargs(None))
    from_pickle = load_generator(pickle_path)
    from_pt = load_generator(path)
    assert from_pickle.config == from_pt.config
    assert torch.equal(from_pickle.latent_avg, latent_avg)
    ws = torch.randn(2, from_pt.n_latent, 512)
    assert torch.equal(from_pickle.synthesis(ws), from_pt.synthesis(ws))
    assert _close(from_pickle.synthesis(ws), rosinality_forward(rosinality_state, ws))


def test_nvidia_conv_clamp_is_kept_and_applied(tmp_path, rosinality_file, rosinality_state):
    from tests.nvidia_fixture import write_nvidia_pickle

    path, latent_avg = rosinality_file
    write_nvidia_pickle(tmp_path / "clamped.pkl", rosinality_state, latent_avg,
                        _nvidia_kwargs(0.5))
    clamped = load_generator(tmp_path / "clamped.pkl")
    assert clamped.config["conv_clamp"] == 0.5
    ws = torch.randn(1, clamped.n_latent, 512)
    assert clamped.features(ws, 3).abs().max() <= 0.5
    assert not torch.allclose(clamped.synthesis(ws), load_generator(path).synthesis(ws))
    save_generator(clamped, tmp_path / "clamped.safetensors")
    assert load_generator(tmp_path / "clamped.safetensors").config["conv_clamp"] == 0.5
