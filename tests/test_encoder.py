"""The Feature-Style Encoder: official layout, shapes, formats, ONNX export, input preparation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.fse_reference import (
    OFFICIAL_KEY_SHAPES,
    meta_state,
    random_encoder_state,
    write_official_file,
)
from tests.skips import require
from vidinv.errors import CheckpointError, InputFileError
from vidinv.models import (
    FeatureStyleEncoder,
    StyleGAN2Generator,
    load_encoder,
    save_encoder,
    save_generator,
)
from vidinv.models.encoder import (
    _adaptive_pool_matrix,
    _pool,
    check_encoder_matches,
    prepare_input,
)
from vidinv.models.encoder_io import encoder_from_official_state

TINY = {"n_latent": 6, "style_dim": 512, "input_size": 64, "widths": (8, 16, 32, 32),
        "blocks": (1, 1, 1, 1), "feature_channels": 16}


def _randomized(encoder: FeatureStyleEncoder, seed: int = 0) -> FeatureStyleEncoder:
    """Random weights and BN statistics (a fresh module's BN is the identity in eval mode)."""
    shapes = [(key, tuple(value.shape)) for key, value in encoder.state_dict().items()
              if key != "latent_avg"]
    encoder.load_state_dict(random_encoder_state(shapes, seed) | {
        "latent_avg": encoder.latent_avg}, strict=True)
    return encoder.eval()


def _official_state(encoder: FeatureStyleEncoder) -> dict[str, torch.Tensor]:
    return {key: value for key, value in encoder.state_dict().items() if key != "latent_avg"}


@pytest.fixture(scope="module")
def tiny() -> FeatureStyleEncoder:
    return _randomized(FeatureStyleEncoder(**TINY), seed=3)


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- the official layout -------------------------------------------------------------------

def test_default_encoder_has_exactly_the_official_keys_and_shapes():
    assert len(OFFICIAL_KEY_SHAPES) == 517
    with torch.device("meta"):
        encoder = FeatureStyleEncoder()
    ours = [(key, tuple(value.shape)) for key, value in encoder.state_dict().items()]
    assert ours[0] == ("latent_avg", (18, 512))  # ours, not in the official files
    assert ours[1:] == list(OFFICIAL_KEY_SHAPES)  # same names, shapes and order


def test_official_state_dict_loads_strictly_and_gives_the_official_config():
    with torch.device("meta"):
        encoder = encoder_from_official_state(meta_state(), "143_enc.pth")
    assert encoder.config == {"n_latent": 18, "style_dim": 512, "input_size": 256,
                              "widths": [64, 128, 256, 512], "blocks": [3, 4, 14, 3],
                              "feature_channels": 512, "content_stride": 2}
    assert encoder.feature_shape == (512, 16, 16)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update({"styles.0.scale": s["styles.0.bias"]}), "unexpected key 'styles.0.scale'"),
    (lambda s: s.pop("block_3.5.bn2.running_var"), "missing key 'block_3.5.bn2.running_var'"),
    (lambda s: s.update({"content_layer.4.weight": torch.empty(512, 512, 1, 1, device="meta")}),
     "'content_layer.4.weight' has shape (512, 512, 1, 1), the model expects (512, 512, 3, 3)"),
])
def test_official_state_dict_with_a_wrong_key_names_it(edit, message):
    state = meta_state()
    edit(state)
    with torch.device("meta"), pytest.raises(CheckpointError, match=message.replace("(", r"\(")
                                             .replace(")", r"\)")):
        encoder_from_official_state(state, "143_enc.pth")


@pytest.mark.parametrize("size", [2, 3, 4, 5, 16, 32, 64, 128])
def test_matrix_pooling_equals_adaptive_avg_pool(size):
    x = torch.randn(2, 5, size, size, generator=torch.Generator().manual_seed(size))
    expected = F.adaptive_avg_pool2d(x, 3)
    assert (_pool(x, _adaptive_pool_matrix(size, 3)) - expected).abs().max().item() <= 1e-6


# --- shapes and latent_avg -----------------------------------------------------------------

def test_tiny_encoder_shapes(tiny):
    w, features = tiny(_images(2, 64))
    assert w.shape == (2, 6, 512)
    assert features.shape == (2, 16, 4, 4) and tiny.feature_shape == (16, 4, 4)
    assert torch.isfinite(w).all() and torch.isfinite(features).all()
    stride_one = FeatureStyleEncoder(**TINY | {"content_stride": 1}).eval()
    assert stride_one(_images(1, 64))[1].shape == (1, 16, 8, 8)
    assert stride_one.feature_shape == (16, 8, 8)


def test_w_includes_latent_avg():
    encoder = _randomized(FeatureStyleEncoder(**TINY), seed=4)
    x = _images(2, 64)
    with torch.no_grad():
        offsets, features = encoder(x)
        latent_avg = torch.randn(512)
        encoder.set_latent_avg(latent_avg)
        w, features_again = encoder(x)
        assert torch.allclose(w, offsets + latent_avg, atol=1e-5)
        assert torch.equal(features, features_again)
        per_layer = torch.randn(6, 512)
        encoder.set_latent_avg(per_layer)
        assert torch.allclose(encoder(x)[0], offsets + per_layer, atol=1e-5)
        encoder.set_latent_avg(latent_avg[None])
        assert torch.allclose(encoder(x)[0], offsets + latent_avg, atol=1e-5)
    with pytest.raises(ValueError, match="latent_avg has shape"):
        encoder.set_latent_avg(torch.zeros(18, 512))


@pytest.mark.parametrize("bad", [
    torch.zeros(1, 3, 128, 128), torch.zeros(1, 4, 64, 64), torch.zeros(3, 64, 64),
])
def test_forward_refuses_other_shapes_and_says_how_to_resize(tiny, bad):
    with pytest.raises(ValueError, match=r"\[B,3,64,64\].*prepare_input"):
        tiny(bad)


def test_forward_refuses_integer_images(tiny):
    with pytest.raises(ValueError, match="float"):
        tiny(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs", [
    {"widths": (8, 16, 32)}, {"blocks": (1, 0, 1, 1)}, {"input_size": 72},
    {"content_stride": 3}, {"n_latent": 0},
])
def test_constructor_refuses_bad_configs(kwargs):
    with pytest.raises(ValueError):
        FeatureStyleEncoder(**TINY | kwargs)


# --- files ---------------------------------------------------------------------------------

def test_official_file_and_native_round_trip_give_identical_outputs(tmp_path, tiny):
    # Official files are 256 px by definition (configs/001.yaml); the tiny weights work there.
    official_path = write_official_file(tmp_path / "enc.pth", _official_state(tiny))
    latent_avg = torch.randn(512)
    from_official = load_encoder(official_path, latent_avg=latent_avg)
    assert from_official.config == dict(TINY, input_size=256, widths=[8, 16, 32, 32],
                                        blocks=[1, 1, 1, 1], content_stride=2)
    assert not from_official.training
    native_path = save_encoder(from_official, tmp_path / "enc.safetensors")
    from_native = load_encoder(native_path)
    x = _images(1, 256, seed=1)
    with torch.no_grad():
        w_official, f_official = from_official(x)
        w_native, f_native = from_native(x)
    assert torch.equal(w_official, w_native) and torch.equal(f_official, f_native)
    assert torch.equal(from_native.latent_avg, latent_avg.expand(6, 512))
    # The official file's weights are the module's weights, bit for bit.
    reference = FeatureStyleEncoder(**dict(TINY, input_size=256)).eval()
    reference.load_state_dict(_official_state(tiny) | {"latent_avg": latent_avg.expand(6, 512)})
    with torch.no_grad():
        assert torch.equal(reference(x)[0], w_official)


@pytest.mark.parametrize(("training_checkpoint", "data_parallel"),
                         [(True, False), (False, True), (True, True)])
def test_training_checkpoints_and_data_parallel_files_load_the_same_weights(
        tmp_path, tiny, training_checkpoint, data_parallel):
    path = write_official_file(tmp_path / "checkpoint.pth", _official_state(tiny),
                               training_checkpoint=training_checkpoint,
                               data_parallel=data_parallel)
    loaded = load_encoder(path).state_dict()
    for key, value in _official_state(tiny).items():
        assert torch.equal(loaded[key], value), key


def test_native_latent_avg_can_be_overridden(tmp_path, tiny):
    path = save_encoder(tiny, tmp_path / "enc.safetensors")
    override = torch.randn(6, 512)
    assert torch.equal(load_encoder(path, latent_avg=override).latent_avg, override)
    with pytest.raises(CheckpointError, match="latent_avg has shape"):
        load_encoder(path, latent_avg=torch.zeros(14, 512))


def test_official_file_without_latent_avg_returns_offsets(tmp_path, tiny):
    path = write_official_file(tmp_path / "enc.pth", _official_state(tiny))
    assert torch.count_nonzero(load_encoder(path).latent_avg) == 0


def test_missing_folder_and_empty_paths(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load_encoder(tmp_path / "absent.pth")
    with pytest.raises(InputFileError, match="is a folder"):
        load_encoder(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_encoder(tmp_path / "empty.pth")


def test_truncated_files(tmp_path, tiny):
    official = write_official_file(tmp_path / "enc.pth", _official_state(tiny)).read_bytes()
    (tmp_path / "cut.pth").write_bytes(official[: len(official) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_encoder(tmp_path / "cut.pth")
    native = save_encoder(tiny, tmp_path / "enc.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(native[: len(native) // 2])
    with pytest.raises(CheckpointError, match="damaged safetensors"):
        load_encoder(tmp_path / "cut.safetensors")


def test_generator_files_are_recognised(tmp_path):
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16)
    native = save_generator(generator, tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="holds a generator, not an encoder"):
        load_encoder(native)
    rosinality = tmp_path / "g.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(512)},
               rosinality)
    with pytest.raises(CheckpointError, match="StyleGAN2 generator checkpoint, not a Feature"):
        load_encoder(rosinality)
    # The first opcodes of an NVIDIA network pickle: a call of torch_utils.persistence.
    nvidia = tmp_path / "network-snapshot.pkl"
    nvidia.write_bytes(b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n}\x85R.")
    with pytest.raises(CheckpointError, match="NVIDIA StyleGAN2-ADA network pickle"):
        load_encoder(nvidia)


def test_arcface_backbone_and_foreign_dicts_are_named(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.bn1.weight": torch.zeros(1)},
               tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="ArcFace iresnet"):
        load_encoder(tmp_path / "backbone.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_encoder(tmp_path / "list.pth")


def test_unknown_key_and_wrong_shape_in_a_file_are_named(tmp_path, tiny):
    state = _official_state(tiny)
    write_official_file(tmp_path / "extra.pth", state | {"block_2.0.gamma": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="unexpected key 'block_2.0.gamma'"):
        load_encoder(tmp_path / "extra.pth")
    write_official_file(tmp_path / "shape.pth", state | {"styles.2.weight": torch.zeros(512, 9)})
    with pytest.raises(CheckpointError, match=r"'styles.2.weight' has shape \(512, 9\), the "
                                              r"model expects \(512, 792\)"):
        load_encoder(tmp_path / "shape.pth")


# --- ONNX ----------------------------------------------------------------------------------

def test_onnx_export_matches_torch_in_onnx_runtime(tmp_path, tiny):
    require("onnxruntime")
    require("onnxscript")
    from vidinv.engines.onnx_export import export_onnx
    from vidinv.engines.ort_engine import OrtEngine

    tiny.set_latent_avg(torch.randn(512))
    tiny.train()  # export must switch to eval (BN running statistics) and restore the mode
    path = export_onnx(tiny, {"x": _images(2, 64)}, ["w", "features"], tmp_path / "enc.onnx",
                       dynamic_axes={"x": {0: "batch"}, "w": {0: "batch"},
                                     "features": {0: "batch"}})
    assert tiny.training
    tiny.eval()
    engine = OrtEngine(path)
    for batch in (1, 3):
        x = _images(batch, 64, seed=batch)
        with torch.no_grad():
            w, features = tiny(x)
        out = engine(x=x)
        assert out["w"].shape == (batch, 6, 512) and out["features"].shape == (batch, 16, 4, 4)
        assert (out["w"] - w).abs().max().item() <= 1e-4
        assert (out["features"] - features).abs().max().item() <= 1e-4


# --- input preparation ---------------------------------------------------------------------

def test_prepare_input_halves_1024_to_256_like_the_official_code():
    images = _images(1, 1024)
    expected = F.interpolate(F.interpolate(images, scale_factor=0.5, mode="bilinear",
                                           align_corners=False),
                             scale_factor=0.5, mode="bilinear", align_corners=False)
    prepared = prepare_input(images, 256)
    assert prepared.shape == (1, 3, 256, 256)
    assert torch.equal(prepared, expected)
    assert not torch.equal(prepared, F.interpolate(images, size=256, mode="bilinear",
                                                   align_corners=False, antialias=True))


def test_prepare_input_other_sizes():
    images = _images(2, 256)
    assert prepare_input(images, 256) is images
    assert prepare_input(_images(1, 300), 256).shape == (1, 3, 256, 256)
    assert prepare_input(_images(1, 128), 256).shape == (1, 3, 256, 256)
    assert torch.equal(prepare_input(_images(1, 768), 256),
                       F.interpolate(_images(1, 768), size=(256, 256), mode="bilinear",
                                     align_corners=False, antialias=True))


@pytest.mark.parametrize("bad", [
    torch.zeros(3, 64, 64), torch.zeros(1, 1, 64, 64), torch.zeros(1, 3, 64, 32),
    torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
])
def test_prepare_input_refuses_bad_images(bad):
    with pytest.raises(ValueError):
        prepare_input(bad, 32)


# --- with a generator ----------------------------------------------------------------------

def test_check_encoder_matches_says_what_differs():
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16)
    with torch.device("meta"):
        encoder = FeatureStyleEncoder()
    with pytest.raises(ValueError, match=r"18 codes vs the generator's 8.*features \(512, 16, "
                                         r"16\) vs the generator's \(16, 16, 16\)"):
        check_encoder_matches(encoder, generator)
