"""Load and save StyleGAN2 generators in every format people have.

* native: safetensors + constructor JSON (:mod:`vidinv.models.native`);
* rosinality/stylegan2-pytorch ``.pt``: ``{'g_ema', 'latent_avg'}`` (converted releases) or the
  ``{g, d, g_ema, g_optim, d_optim, args}`` files its ``train.py`` saves (no ``latent_avg``: it is
  then computed from the mapping network with a fixed seed);
* NVIDIA StyleGAN2-ADA network pickles, through a restricted unpickler that runs no pickled code
  (:mod:`vidinv.models.nvidia_pickle`).

Every foreign format is first renamed to rosinality's keys, then to ours by one table.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path

import torch

from vidinv.errors import CheckpointError
from vidinv.models.native import (
    check_state_shapes,
    load_native_module,
    load_state_strict,
    looks_like_safetensors,
    read_head,
    save_native,
)
from vidinv.models.safe_load import is_legacy_torch_file, torch_load
from vidinv.models.stylegan2 import StyleGAN2Generator, _blur_kernel_2d, layer_channels

log = logging.getLogger(__name__)

GENERATOR_KIND = "generator"
#: Samples and seed for the average latent when a checkpoint does not carry one.
LATENT_AVG_SAMPLES = 4096
LATENT_AVG_SEED = 0
#: The largest generator resolution a checkpoint may describe (StyleGAN2 goes to 1024).
MAX_RESOLUTION = 4096

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> StyleGAN2Generator:
    """Load a generator from a native, rosinality or NVIDIA file; eval mode, on ``device``."""
    path = Path(path)
    kind = sniff_checkpoint_kind(path)
    if kind == "native":
        generator = _load_native_generator(path)
    elif kind == "torch":
        generator = _load_rosinality_generator(path)
    else:
        generator = _load_nvidia_generator(path)
    return generator.eval().requires_grad_(False).to(device)


def save_generator(generator: StyleGAN2Generator, path: str | Path) -> Path:
    """Write ``generator`` (weights, noise buffers, ``latent_avg``) as a native file."""
    return save_native(path, GENERATOR_KIND, generator.config, generator.state_dict())


def sniff_checkpoint_kind(path: Path) -> str:
    """'native', 'torch' (torch.save zip or legacy) or 'pickle' (NVIDIA), from the first bytes."""
    head = read_head(path, "checkpoint")
    if looks_like_safetensors(head):
        return "native"
    if head.startswith(_ZIP_MAGIC) or is_legacy_torch_file(head):
        return "torch"  # a torch.save zip, or the legacy (pre-1.6) format: both load safely
    if head.startswith(_PICKLE_PROTO):
        return "pickle"
    raise CheckpointError(f"{path}: not a checkpoint vidinv knows (native .safetensors, "
                          "rosinality .pt or NVIDIA .pkl)")


def _load_native_generator(path: Path) -> StyleGAN2Generator:
    return load_native_module(path, GENERATOR_KIND, StyleGAN2Generator, "a generator")


def _torch_load_weights_only(path: Path) -> object:
    """torch.load that unpickles tensors and plain containers only (argparse.Namespace too),
    bounded by :mod:`vidinv.models.safe_load` (zip bombs, stride-0 views, TorchScript)."""
    return torch_load(path, "generator checkpoint", (argparse.Namespace,))


def _load_rosinality_generator(path: Path) -> StyleGAN2Generator:
    content = _torch_load_weights_only(path)
    if not isinstance(content, dict) or "g_ema" not in content:
        raise CheckpointError(f"{path}: {_describe_foreign(content)}, not a StyleGAN2 "
                              "generator (rosinality files have a 'g_ema' entry)")
    state = content["g_ema"]
    latent_avg = content.get("latent_avg")
    generator = generator_from_rosinality_state(state, latent_avg, source=str(path))
    if latent_avg is None:
        log.warning("%s has no latent_avg; computed it from %d mapped samples (seed %d)",
                    path, LATENT_AVG_SAMPLES, LATENT_AVG_SEED)
    return generator


def _load_nvidia_generator(path: Path) -> StyleGAN2Generator:
    from vidinv.models.nvidia_pickle import load_nvidia_generator_state, nvidia_to_rosinality

    state = load_nvidia_generator_state(path)
    rosinality_state, facts = nvidia_to_rosinality(state)
    latent_avg = rosinality_state.pop("latent_avg", None)
    if latent_avg is None:
        latent_avg = facts.get("latent_avg")
    return generator_from_rosinality_state(rosinality_state, latent_avg, source=str(path),
                                           conv_clamp=facts.get("conv_clamp"))


def _describe_foreign(content: object) -> str:
    if not isinstance(content, dict):
        return f"a {type(content).__name__}"
    keys = [str(key) for key in content]
    if any(key.startswith("content_layer.") for key in keys) or "enc_state_dict" in keys:
        return "a Feature-Style Encoder checkpoint"
    return "a dict with keys " + ", ".join(sorted(keys)[:6]) + ("…" if len(keys) > 6 else "")


# --- rosinality keys -> ours ---------------------------------------------------------------

_STYLED_CONV_SUFFIXES = {
    "conv.weight": "weight",
    "conv.modulation.weight": "affine.weight",
    "conv.modulation.bias": "affine.bias",
    "noise.weight": "noise_strength",
    "activate.bias": "bias",
}
_TO_RGB_SUFFIXES = {
    "conv.weight": "weight",
    "conv.modulation.weight": "affine.weight",
    "conv.modulation.bias": "affine.bias",
    "bias": "bias",
}


def rosinality_to_native_keys(state: dict[str, torch.Tensor],
                              source: str) -> dict[str, torch.Tensor]:
    """Rename a rosinality ``g_ema`` state dict to this package's keys and shapes.

    Fixed FIR buffers (``conv.blur.kernel``, ``upsample.kernel``) are checked and dropped.
    An unknown key is a :class:`CheckpointError` that names it.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        out_key, value = _rename_rosinality_key(key, tensor, source)
        if out_key is not None:
            out[out_key] = value
    return out


def _rename_rosinality_key(key: str, tensor: torch.Tensor,
                           source: str) -> tuple[str | None, torch.Tensor]:
    if key.endswith("blur.kernel") or key.endswith("upsample.kernel"):
        if not torch.allclose(tensor.float(), _blur_kernel_2d(4.0)):
            raise CheckpointError(f"{source}: {key!r} is not the standard [1,3,3,1] filter; "
                                  "only config-f generators are supported")
        return None, tensor
    if match := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
        return f"mapping.layers.{int(match[1]) - 1}.{match[2]}", tensor
    if key == "input.input":
        return "synthesis.const", tensor
    if match := re.fullmatch(r"noises\.noise_(\d+)", key):
        return f"synthesis.layers.{match[1]}.noise", tensor
    if match := re.fullmatch(r"(conv1|convs\.(\d+))\.(.+)", key):
        index = 0 if match[1] == "conv1" else int(match[2]) + 1
        suffix = _STYLED_CONV_SUFFIXES.get(match[3])
        if suffix is not None:
            value = tensor[0] if suffix == "weight" and tensor.ndim == 5 else tensor
            return f"synthesis.layers.{index}.{suffix}", value
    if match := re.fullmatch(r"(to_rgb1|to_rgbs\.(\d+))\.(.+)", key):
        index = 0 if match[1] == "to_rgb1" else int(match[2]) + 1
        suffix = _TO_RGB_SUFFIXES.get(match[3])
        if suffix is not None:
            value = tensor
            if suffix == "weight" and tensor.ndim == 5:
                value = tensor[0]
            elif suffix == "bias":
                value = tensor.reshape(-1)
            return f"synthesis.to_rgbs.{index}.{suffix}", value
    raise CheckpointError(f"{source}: unknown key {key!r} in the generator state; "
                          "not a rosinality StyleGAN2 config-f generator")


def infer_generator_config(state: dict[str, torch.Tensor], source: str) -> dict:
    """Constructor arguments of :class:`StyleGAN2Generator` from a rosinality state's shapes."""
    try:
        style_keys = [k for k in state if re.fullmatch(r"style\.\d+\.weight", k)]
        n_mlp = len(style_keys)
        style_dim = int(state["style.1.weight"].shape[1])
        rgb_indices = {k.split(".")[1] for k in state if k.startswith("to_rgbs.")}
        n_to_rgbs = len(rgb_indices)
        if rgb_indices != {str(j) for j in range(n_to_rgbs)}:
            raise CheckpointError(f"{source}: to_rgbs layers {sorted(rgb_indices)[:8]} are not "
                                  "numbered 0..n-1; not a complete rosinality generator")
        resolution = 2 ** (n_to_rgbs + 2)
        if resolution > MAX_RESOLUTION:
            raise CheckpointError(f"{source}: {n_to_rgbs} to_rgbs layers mean a {resolution} px "
                                  f"generator, beyond {MAX_RESOLUTION} px; the file is corrupt "
                                  "or crafted")
        channels = {4: int(state["input.input"].shape[1])}
        for j in range(n_to_rgbs):
            channels[2 ** (j + 3)] = int(state[f"to_rgbs.{j}.conv.weight"].shape[2])
    except KeyError as error:
        raise CheckpointError(f"{source}: missing key {error.args[0]!r}; not a complete "
                              "rosinality StyleGAN2 generator") from None
    except (AttributeError, IndexError, TypeError):
        raise CheckpointError(f"{source}: its tensors do not have the shapes of a rosinality "
                              "StyleGAN2 generator") from None
    channel_max = channels[4]
    below_max = [res for res in sorted(channels) if channels[res] < channel_max]
    top = below_max[0] if below_max else resolution
    multiplier = channels[top] * top / 16384
    if multiplier == int(multiplier):
        multiplier = int(multiplier)
    for res, count in channels.items():
        if layer_channels(res, multiplier, channel_max) != count:
            raise CheckpointError(f"{source}: {count} channels at {res} px do not follow the "
                                  "StyleGAN2 config-f channel layout")
    return {"resolution": resolution, "style_dim": style_dim, "n_mlp": n_mlp,
            "channel_multiplier": multiplier, "channel_max": channel_max}


def generator_from_rosinality_state(state: dict[str, torch.Tensor],
                                    latent_avg: torch.Tensor | None, source: str,
                                    conv_clamp: float | None = None) -> StyleGAN2Generator:
    """Build a generator from a rosinality-keyed state (and its average latent, if any)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'g_ema' is a {type(state).__name__}, not a state dict")
    config = infer_generator_config(state, source)
    config["conv_clamp"] = conv_clamp
    if math.log2(config["resolution"]) % 1:
        raise CheckpointError(f"{source}: resolution {config['resolution']} is not a power of 2")
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{source}: 'g_ema' holds entries that are not tensors")
    tensors = rosinality_to_native_keys(state, source)
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor):
            raise CheckpointError(f"{source}: latent_avg is a {type(latent_avg).__name__}, not "
                                  "a tensor")
        tensors["latent_avg"] = latent_avg.reshape(-1).float()
    else:
        tensors["latent_avg"] = torch.zeros(config["style_dim"])
    # Shapes first, on the meta device (no memory): the tensors the file holds must be exactly
    # what the inferred generator expects before the real one is allocated.
    try:
        with torch.device("meta"):
            skeleton = StyleGAN2Generator(**config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{source}: not a buildable StyleGAN2 generator ({error})") from None
    check_state_shapes(skeleton, tensors, source)
    generator = StyleGAN2Generator(**config)
    load_state_strict(generator, tensors, source)
    if latent_avg is None:
        generator.latent_avg.copy_(
            generator.compute_latent_avg(LATENT_AVG_SAMPLES, LATENT_AVG_SEED))
    return generator
