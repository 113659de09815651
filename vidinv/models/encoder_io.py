"""Load and save Feature-Style Encoders.

Accepted files:

* native: safetensors + constructor JSON, kind ``encoder``, ``latent_avg`` included
  (:mod:`vidinv.models.native`);
* the official release ``143_enc.pth`` (InterDigitalInc/FeatureStyleEncoder): a plain state dict
  of ``fs_encoder_v2`` (517 keys for the released configuration), read with
  ``torch.load(weights_only=True)``; also its training checkpoints ``{n_epoch, enc_state_dict,
  …}`` and state dicts saved from ``DataParallel`` (``module.`` prefix). The architecture
  (widths, blocks, number of codes, feature channels) is read from the tensor shapes; the input
  size (256) and the content stride (2) are those of the released ``configs/001.yaml``, which the
  weights do not record. The official files carry no ``latent_avg`` (it belongs to the
  generator): pass ``latent_avg=G.latent_avg`` or the encoder returns bare offsets.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from vidinv.errors import CheckpointError
from vidinv.models.encoder import FeatureStyleEncoder
from vidinv.models.native import (
    load_native_module,
    load_state_strict,
    looks_like_safetensors,
    read_head,
    save_native,
)

log = logging.getLogger(__name__)

ENCODER_KIND = "encoder"
#: What the released configuration (configs/001.yaml) uses and its weights cannot tell.
OFFICIAL_INPUT_SIZE = 256
OFFICIAL_CONTENT_STRIDE = 2

_BLOCK_KEY = re.compile(r"block_([1-4])\.(\d+)\.")
_STYLE_KEY = re.compile(r"styles\.(\d+)\.weight")
_REQUIRED_KEYS = ("conv.0.weight", "content_layer.1.weight", "styles.0.weight")


def load_encoder(path: str | Path, latent_avg: torch.Tensor | None = None,
                 device: str | torch.device = "cpu") -> FeatureStyleEncoder:
    """Load an encoder from a native or official file; eval mode, frozen, on ``device``.

    ``latent_avg`` ([512], [1,512] or [N,512], usually ``G.latent_avg``) replaces the stored
    one (native) or sets it (official files, which have none: without it ``w`` is the offsets).

    Raises InputFileError (missing or unreadable path) or CheckpointError (truncated, not an
    encoder, unknown key, shape mismatch), each with a one-line message.
    """
    path = Path(path)
    if _is_safetensors(path):
        encoder = _load_native_encoder(path)
    else:
        state = _official_state(path)
        encoder = encoder_from_official_state(state, str(path))
        if latent_avg is None:
            log.warning("%s has no latent_avg; the encoder returns offsets — pass the "
                        "generator's latent_avg to get W+ codes", path)
    if latent_avg is not None:
        try:
            encoder.set_latent_avg(latent_avg)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}; use the generator the encoder was "
                                  "trained with") from None
    return encoder.eval().requires_grad_(False).to(device)


def save_encoder(encoder: FeatureStyleEncoder, path: str | Path) -> Path:
    """Write ``encoder`` (weights, BN statistics, ``latent_avg``) as a native file, atomically."""
    return save_native(path, ENCODER_KIND, encoder.config, encoder.state_dict())


def encoder_from_official_state(state: dict[str, torch.Tensor], source: str,
                                input_size: int = OFFICIAL_INPUT_SIZE,
                                content_stride: int = OFFICIAL_CONTENT_STRIDE
                                ) -> FeatureStyleEncoder:
    """Build a :class:`FeatureStyleEncoder` shaped like ``state`` (official key names) and load
    it strictly. ``source`` names the origin in errors. ``latent_avg`` stays zero."""
    for key in _REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r}; not a complete "
                                  "Feature-Style Encoder state dict")
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(2)) for key in state if (m := _BLOCK_KEY.match(key))
                   and m.group(1) == str(stage)}
        if not indices:
            raise CheckpointError(f"{source}: no 'block_{stage}.*' keys; not a complete "
                                  "Feature-Style Encoder state dict")
        blocks.append(max(indices) + 1)
    widths = []
    for stage in range(1, 5):
        key = f"block_{stage}.0.bn2.weight"
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r}; the file is incomplete")
        widths.append(int(state[key].shape[0]))
    n_latent = 1 + max(int(m.group(1)) for key in state if (m := _STYLE_KEY.fullmatch(key)))
    style_weight = state["styles.0.weight"]
    if style_weight.ndim != 2:
        raise CheckpointError(f"{source}: 'styles.0.weight' has shape "
                              f"{tuple(style_weight.shape)}, expected [style_dim, features]")
    config = {
        "n_latent": n_latent, "style_dim": int(style_weight.shape[0]),
        "input_size": input_size, "widths": widths, "blocks": blocks,
        "feature_channels": int(state["content_layer.1.weight"].shape[0]),
        "content_stride": content_stride,
    }
    encoder = FeatureStyleEncoder(**config)
    tensors = dict(state)
    tensors["latent_avg"] = encoder.latent_avg
    load_state_strict(encoder, tensors, source)
    return encoder


def _is_safetensors(path: Path) -> bool:
    return looks_like_safetensors(read_head(path, "encoder"))


def _load_native_encoder(path: Path) -> FeatureStyleEncoder:
    return load_native_module(path, ENCODER_KIND, FeatureStyleEncoder, "an encoder")


def _official_state(path: Path) -> dict[str, torch.Tensor]:
    """The encoder state dict inside an official file, ``module.`` prefix removed."""
    content = _torch_load(path)
    if isinstance(content, dict) and isinstance(content.get("enc_state_dict"), dict):
        content = content["enc_state_dict"]
    if not isinstance(content, dict) or not content:
        raise CheckpointError(f"{path}: holds {_describe(content)}, not a Feature-Style "
                              "Encoder state dict")
    if all(isinstance(key, str) and key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    foreign = _foreign_kind(content)
    if foreign:
        raise CheckpointError(f"{path}: is {foreign}, not a Feature-Style Encoder; pass the "
                              "encoder file (e.g. 143_enc.pth)")
    for key, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a "
                                  "tensor; not an encoder state dict")
    return content


def _foreign_kind(content: dict) -> str | None:
    keys = [str(key) for key in content]
    if "g_ema" in keys or any(key.startswith(("decoder.", "style.", "convs.", "to_rgbs."))
                              for key in keys):
        return "a StyleGAN2 generator checkpoint"
    if "state_dict" in keys and "latent_avg" in keys:
        return "a pSp/e4e checkpoint (generator + its own encoder)"
    if "conv1.weight" in keys and any(key.startswith("layer1.") for key in keys):
        return "an ArcFace iresnet state dict (e.g. backbone.pth)"
    if not any(key.startswith(("block_", "styles.", "content_layer.", "conv.")) for key in keys):
        shown = ", ".join(sorted(keys)[:4]) + ("…" if len(keys) > 4 else "")
        return f"a dict with keys {shown}"
    return None


def _describe(content: object) -> str:
    if isinstance(content, dict):
        return "an empty dict"
    return f"a {type(content).__name__}"


def _torch_load(path: Path) -> object:
    """torch.load that unpickles tensors and plain containers only, bounded
    (:func:`vidinv.models.safe_load.torch_load`)."""
    from vidinv.models.safe_load import PlainPickleError, torch_load

    try:
        return torch_load(path, "encoder checkpoint")
    except PlainPickleError:
        raise CheckpointError(f"{path}: is an NVIDIA StyleGAN2-ADA network pickle (a "
                              "generator), not a Feature-Style Encoder; pass the encoder "
                              "file (e.g. 143_enc.pth)") from None
