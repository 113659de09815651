"""NVIDIA StyleGAN2-ADA pickles: restricted loading and conversion to the rosinality layout."""

from __future__ import annotations

import os
import pickle
import warnings
from collections import OrderedDict

import pytest
import torch

from tests.nvidia_fixture import write_nvidia_pickle
from vidinv.errors import CheckpointError, UnsafePickleError
from vidinv.models.nvidia_pickle import (
    NvidiaGeneratorState,
    load_nvidia_generator_state,
    nvidia_to_rosinality,
)

RESOLUTION, W_DIM, N_MLP, CHANNEL_BASE, CHANNEL_MAX = 32, 32, 2, 256, 16


def init_kwargs(**synthesis_overrides: object) -> dict:
    return {
        "z_dim": W_DIM,
        "w_dim": W_DIM,
        "mapping_kwargs": {"num_layers": N_MLP},
        "synthesis_kwargs": {
            "channel_base": CHANNEL_BASE,
            "channel_max": CHANNEL_MAX,
            "num_fp16_res": 4,
            "conv_clamp": 256,
            **synthesis_overrides,
        },
        "c_dim": 0,
        "img_resolution": RESOLUTION,
        "img_channels": 3,
    }


def rosinality_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of rosinality's Generator (model.py @ bef283a) with NVIDIA channel counts."""

    def channels(res: int) -> int:
        return min(CHANNEL_BASE // res, CHANNEL_MAX)

    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(1, N_MLP + 1):
        shapes[f"style.{i}.weight"] = (W_DIM, W_DIM)
        shapes[f"style.{i}.bias"] = (W_DIM,)

    def modconv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.conv.weight"] = (1, cout, cin, k, k)
        shapes[f"{name}.conv.modulation.weight"] = (cin, W_DIM)
        shapes[f"{name}.conv.modulation.bias"] = (cin,)

    def styled_conv(name: str, cin: int, cout: int, upsample: bool) -> None:
        modconv(name, cin, cout, 3)
        if upsample:
            shapes[f"{name}.conv.blur.kernel"] = (4, 4)
        shapes[f"{name}.noise.weight"] = (1,)
        shapes[f"{name}.activate.bias"] = (cout,)

    def to_rgb(name: str, cin: int, upsample: bool) -> None:
        modconv(name, cin, 3, 1)
        shapes[f"{name}.bias"] = (1, 3, 1, 1)
        if upsample:
            shapes[f"{name}.upsample.kernel"] = (4, 4)

    shapes["input.input"] = (1, channels(4), 4, 4)
    styled_conv("conv1", channels(4), channels(4), upsample=False)
    to_rgb("to_rgb1", channels(4), upsample=False)
    log_size = RESOLUTION.bit_length() - 1
    for k, log_res in enumerate(range(3, log_size + 1)):
        cin, cout = channels(2 ** (log_res - 1)), channels(2**log_res)
        styled_conv(f"convs.{2 * k}", cin, cout, upsample=True)
        styled_conv(f"convs.{2 * k + 1}", cout, cout, upsample=False)
        to_rgb(f"to_rgbs.{k}", cout, upsample=True)
    for i in range((log_size - 2) * 2 + 1):
        res = 2 ** ((i + 5) // 2)
        shapes[f"noises.noise_{i}"] = (1, 1, res, res)
    return shapes


def random_rosinality_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps) / 64 * 4  # make_kernel([1,3,3,1]) * upsample_factor**2
    return {
        key: kernel.clone() if key.endswith("kernel") else torch.randn(shape, generator=generator)
        for key, shape in rosinality_shapes().items()
    }


@pytest.fixture
def weights() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return random_rosinality_state(), torch.randn(W_DIM, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("protocol", "numpy1_names"), [(3, False), (3, True), (4, False), (5, False)]
)
def test_round_trip_gives_back_identical_tensors(tmp_path, weights, protocol, numpy1_names):
    state, latent_avg = weights
    marker = tmp_path / "module_src_was_executed"
    path = tmp_path / "network-snapshot.pkl"
    write_nvidia_pickle(
        path,
        state,
        latent_avg,
        init_kwargs(),
        protocol=protocol,
        numpy1_names=numpy1_names,
        module_src=f"open({str(marker)!r}, 'w').close()\n",
    )
    if numpy1_names:
        assert b"numpy.core.multiarray\nscalar" in path.read_bytes()

    loaded = load_nvidia_generator_state(path)
    assert loaded.network == "G_ema"
    assert loaded.init_kwargs == init_kwargs()  # EasyDicts come back as plain dicts
    assert type(loaded.init_kwargs["synthesis_kwargs"]) is dict
    assert loaded.class_names[""] == "Generator"
    assert loaded.class_names["synthesis.b8.conv0"] == "SynthesisLayer"
    assert loaded.tensors["synthesis.b4.const"].shape == (16, 4, 4)
    assert loaded.tensors["synthesis.b32.conv1.weight"].shape == (8, 8, 3, 3)
    assert loaded.tensors["synthesis.b8.conv0.noise_const"].shape == (8, 8)
    assert loaded.tensors["synthesis.b8.conv0.noise_strength"].shape == ()
    assert loaded.tensors["synthesis.b8.torgb.bias"].shape == (3,)
    assert type(loaded.tensors["synthesis.b4.const"]) is torch.Tensor  # not a Parameter

    converted, facts = nvidia_to_rosinality(loaded)
    assert converted.keys() == state.keys()
    for key, tensor in state.items():
        assert converted[key].dtype == torch.float32
        assert torch.equal(converted[key], tensor), key
    assert torch.equal(facts.pop("latent_avg"), latent_avg)
    assert facts == {
        "resolution": RESOLUTION,
        "style_dim": W_DIM,
        "n_mlp": N_MLP,
        "channel_base": CHANNEL_BASE,
        "channel_max": CHANNEL_MAX,
        "conv_clamp": 256,
        "architecture": "skip",
    }
    assert not marker.exists()


def test_falls_back_to_g_with_a_warning(tmp_path, weights):
    state, latent_avg = weights
    path = tmp_path / "no-g-ema.pkl"
    write_nvidia_pickle(path, state, latent_avg, init_kwargs(), include_g_ema=False)
    with pytest.warns(UserWarning, match="G_ema"):
        loaded = load_nvidia_generator_state(path)
    assert loaded.network == "G"
    converted, _ = nvidia_to_rosinality(loaded)
    assert torch.equal(converted["style.1.weight"], state["style.1.weight"] + 1)  # G, not G_ema


def test_defaults_apply_when_kwargs_are_absent(tmp_path, weights):
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, *weights, init_kwargs())
    tensors = load_nvidia_generator_state(path).tensors
    kwargs = init_kwargs()
    kwargs["mapping_kwargs"] = {}
    kwargs["synthesis_kwargs"] = {"channel_base": CHANNEL_BASE, "channel_max": CHANNEL_MAX}
    with pytest.raises(CheckpointError, match=r"mapping\.fc2\.weight"):
        nvidia_to_rosinality(NvidiaGeneratorState(kwargs, tensors))  # num_layers defaults to 8
    kwargs["mapping_kwargs"] = {"num_layers": N_MLP}
    _, facts = nvidia_to_rosinality(NvidiaGeneratorState(kwargs, tensors))
    assert facts["conv_clamp"] is None
    assert facts["architecture"] == "skip"


class _Reduce:
    """Pickles as ``func(*args)``; lets a test write any global call into a pickle."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    payload = {"G_ema": _Reduce(os.system, f"touch {marker}")}
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system") as info:
        load_nvidia_generator_state(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_refuses_a_tensor_storage_that_weights_only_load_rejects(tmp_path):
    marker = tmp_path / "pwned"
    evil_storage = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "evil-storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(torch.storage._load_from_bytes, evil_storage)}))
    with pytest.raises(UnsafePickleError, match=r"posix\.system") as info:
        load_nvidia_generator_state(path)
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def test_refuses_a_tensor_view_past_its_storage(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch.zeros(4).storage()
    view = _Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1000,), (1,), False, OrderedDict())
    path = tmp_path / "oob.pkl"
    path.write_bytes(pickle.dumps({"G_ema": view}))
    with pytest.raises(CheckpointError, match="past the end"):
        load_nvidia_generator_state(path)


def test_refuses_an_ordinary_torch_module(tmp_path):
    path = tmp_path / "module.pkl"
    path.write_bytes(pickle.dumps({"G_ema": torch.nn.Identity()}))
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.linear\.Identity"):
        load_nvidia_generator_state(path)


def test_names_a_tensorflow_pickle(tmp_path):
    path = tmp_path / "tf.pkl"
    # What a TF-era pickle starts with: a global for dnnlib.tflib.network.Network.
    path.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\n)\x81.")
    with pytest.raises(UnsafePickleError, match=r"dnnlib\.tflib\.network\.Network.*TensorFlow"):
        load_nvidia_generator_state(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"\x80\x04\x95", "truncated"),
        (bytes(range(256)) * 4, "not a pickle"),
        (b"\x80\x04\xff\xfe\xfd\xfc", "not a valid pickle"),
        (b"PK\x03\x04rest-of-a-zip", "zip"),
        (pickle.dumps({"weights": [1, 2, 3]}), "no 'G_ema'"),
        (pickle.dumps([1, 2, 3]), "not the dict"),
        (pickle.dumps({"G_ema": {"a": 1}}), "not an NVIDIA persistent"),
    ],
)
def test_bad_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_nvidia_generator_state(path)
    assert "\n" not in str(info.value)


def test_truncated_real_pickle(tmp_path, weights):
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, *weights, init_kwargs())
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_nvidia_generator_state(path)


def test_refuses_conditional_and_non_skip_generators(tmp_path, weights):
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, *weights, init_kwargs())
    loaded = load_nvidia_generator_state(path)
    loaded.init_kwargs["c_dim"] = 10
    with pytest.raises(CheckpointError, match="conditional"):
        nvidia_to_rosinality(loaded)
    loaded.init_kwargs["c_dim"] = 0
    loaded.init_kwargs["synthesis_kwargs"]["architecture"] = "resnet"
    with pytest.raises(CheckpointError, match="resnet"):
        nvidia_to_rosinality(loaded)
    loaded.init_kwargs["synthesis_kwargs"]["architecture"] = "skip"
    loaded.init_kwargs["img_channels"] = 1
    with pytest.raises(CheckpointError, match="1-channel"):
        nvidia_to_rosinality(loaded)


def test_conditional_pickle_is_refused(tmp_path, weights):
    path = tmp_path / "cond.pkl"
    write_nvidia_pickle(path, *weights, {**init_kwargs(), "c_dim": 10})
    with pytest.raises(CheckpointError, match=r"c_dim=10"):
        nvidia_to_rosinality(load_nvidia_generator_state(path))


def test_unknown_tensor_key_is_named(tmp_path, weights):
    path = tmp_path / "extra.pkl"
    extra = {"synthesis.b8.conv0.mystery": torch.zeros(2)}
    write_nvidia_pickle(path, *weights, init_kwargs(), extra_tensors=extra)
    loaded = load_nvidia_generator_state(path)
    assert "synthesis.b8.conv0.mystery" in loaded.tensors
    with pytest.raises(CheckpointError, match=r"synthesis\.b8\.conv0\.mystery"):
        nvidia_to_rosinality(loaded)


def test_wrong_shape_and_missing_key_are_named(tmp_path, weights):
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, *weights, init_kwargs())
    loaded = load_nvidia_generator_state(path)
    loaded.tensors["synthesis.b16.conv1.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"synthesis\.b16\.conv1\.bias.*\[5\]"):
        nvidia_to_rosinality(loaded)
    del loaded.tensors["synthesis.b16.conv1.bias"]
    with pytest.raises(CheckpointError, match=r"synthesis\.b16\.conv1\.bias.*missing"):
        nvidia_to_rosinality(loaded)


def test_generator_without_noise_gets_zero_noise(tmp_path, weights):
    state, latent_avg = weights
    no_noise = {k: v for k, v in state.items() if "noise" not in k}
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, no_noise, latent_avg, init_kwargs(use_noise=False))
    converted, _ = nvidia_to_rosinality(load_nvidia_generator_state(path))
    assert converted.keys() == state.keys()
    assert not converted["convs.3.noise.weight"].any()
    assert converted["noises.noise_4"].shape == (1, 1, 16, 16)


def test_loader_accepts_a_path_string(tmp_path, weights):
    path = tmp_path / "g.pkl"
    write_nvidia_pickle(path, *weights, init_kwargs())
    assert load_nvidia_generator_state(str(path)).network == "G_ema"


@pytest.mark.parametrize("where", ["key", "kwargs_key", "value"])
def test_a_deeply_nested_tuple_is_one_line_and_no_crash(tmp_path, where):
    """A tuple nested 200 000 deep (a few hundred kB) as a dict key would be hashed by C code
    that recurses until the process dies; as a value it makes messages recurse. The unpickler
    bounds the depth of everything it builds: one line, in a child process that survives."""
    import struct
    import subprocess
    import sys

    def text(value: str) -> bytes:
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    deep = b"N" + b"\x85" * 200_000  # None, then TUPLE1 200 000 times
    if where == "key":
        payload = b"\x80\x02}" + deep + text("v") + b"s."
    elif where == "kwargs_key":
        payload = (b"\x80\x02}" + text("G_ema")
                   + b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n}("
                   + text("type") + text("class") + text("class_name") + text("Generator")
                   + text("state") + b"}(" + text("_init_kwargs") + b"}" + deep + text("v")
                   + b"s" + text("_modules") + b"}uu\x85Rs.")
    else:
        payload = b"\x80\x02}" + text("G_ema") + deep + b"s."
    path = tmp_path / "deep.pkl"
    path.write_bytes(payload)
    done = subprocess.run([sys.executable, "-m", "vidinv.cli", "models", "info", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nested too deeply" in lines[0] and str(path) in lines[0]
    # at a depth a real file could have, a key is fine and the message about it is bounded
    shallow = b"\x80\x02}" + b"N" + b"\x85" * 150 + text("v") + b"s."
    path.write_bytes(shallow)
    with pytest.raises(CheckpointError, match="no 'G_ema'") as caught:
        load_nvidia_generator_state(path)
    assert len(str(caught.value)) < 400
