"""Write pickles in the NVIDIA StyleGAN2-ADA snapshot format without NVIDIA's code.

The real format (NVlabs/stylegan2-ada-pytorch @ d72cc7d, torch_utils/persistence.py and
training/training_loop.py): ``pickle.dump({G, D, G_ema, training_set_kwargs, augment_pipe})``,
each network pickled as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=<source of training/networks.py>,
class_name=<bare class name, e.g. 'Generator'>, state=<the torch.nn.Module __dict__>)``.
Nested config dicts are ``dnnlib.util.EasyDict``; gains such as ``act_gain`` are numpy
float64; parameters and buffers are plainly pickled torch tensors.

To make pickle record those global names, stand-in modules ``torch_utils.persistence`` and
``dnnlib.util`` are placed in ``sys.modules`` only while the pickle is written.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import re
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version at d72cc7d
DEFAULT_MODULE_SRC = "raise RuntimeError('module_src of a test pickle was executed')\n"


def _reconstruct_persistent_obj(meta: dict) -> Any:  # never called: only its name is pickled
    raise RuntimeError("stand-in for torch_utils.persistence._reconstruct_persistent_obj")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict subclass; pickled via NEWOBJ + SETITEMS)."""


EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def _stand_in_modules() -> Iterator[None]:
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {name: sys.modules.get(name) for name in names}
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    sys.modules.update(
        {
            "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"),
            "dnnlib.util": util,
        }
    )
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class PersistentModule:
    """A network as NVIDIA pickles it: class name + ``torch.nn.Module.__dict__``."""

    def __init__(
        self,
        class_name: str,
        *,
        parameters: dict[str, torch.Tensor] | None = None,
        buffers: dict[str, torch.Tensor] | None = None,
        modules: dict[str, PersistentModule] | None = None,
        attributes: dict[str, Any] | None = None,
        init_args: tuple = (),
        init_kwargs: dict[str, Any] | None = None,
        module_src: str = DEFAULT_MODULE_SRC,
    ) -> None:
        self.class_name = class_name
        self.module_src = module_src
        self.state: dict[str, Any] = {
            "training": False,
            "_parameters": OrderedDict(
                (name, torch.nn.Parameter(t.detach().clone(), requires_grad=False))
                for name, t in (parameters or {}).items()
            ),
            "_buffers": OrderedDict(
                (name, t.detach().clone()) for name, t in (buffers or {}).items()
            ),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": OrderedDict(modules or {}),
            **(attributes or {}),
            "_init_args": tuple(init_args),
            "_init_kwargs": _easy(init_kwargs or {}),
        }

    def submodule(self, path: str) -> PersistentModule:
        module = self
        for name in filter(None, path.split(".")):
            module = module.state["_modules"][name]
        return module

    def __reduce__(self) -> tuple:
        meta = dict(
            type="class",
            version=PERSISTENCE_VERSION,
            module_src=self.module_src,
            class_name=self.class_name,
            state=self.state,
        )
        return (_reconstruct_persistent_obj, (meta,))


def _easy(value: Any) -> Any:
    if isinstance(value, dict):
        return EasyDict({key: _easy(item) for key, item in value.items()})
    return value


def _resample_filter() -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(taps, taps) / 64.0


def _rosinality_to_nvidia_names(
    rosinality_state: dict[str, torch.Tensor], latent_avg: torch.Tensor
) -> dict[str, torch.Tensor]:
    """rosinality key -> NVIDIA dotted path, reshaped to NVIDIA shapes; kernels dropped."""
    out: dict[str, torch.Tensor] = {"mapping.w_avg": latent_avg.reshape(-1)}

    def layer(rest: str, tensor: torch.Tensor, torgb: bool) -> tuple[str, torch.Tensor]:
        if rest == "conv.weight":
            return "weight", tensor.squeeze(0)
        if rest.startswith("conv.modulation."):
            return "affine." + rest.removeprefix("conv.modulation."), tensor
        if rest == "noise.weight" and not torgb:
            return "noise_strength", tensor.reshape(())
        if rest == "activate.bias" and not torgb:
            return "bias", tensor
        if rest == "bias" and torgb:
            return "bias", tensor.reshape(-1)
        raise ValueError(f"unexpected rosinality key part {rest!r}")

    for key, tensor in rosinality_state.items():
        if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
            out[f"mapping.fc{int(m[1]) - 1}.{m[2]}"] = tensor
        elif key == "input.input":
            out["synthesis.b4.const"] = tensor.squeeze(0)
        elif key.endswith(("conv.blur.kernel", "upsample.kernel")):
            continue  # NVIDIA keeps resample_filter buffers instead
        elif m := re.fullmatch(r"noises\.noise_(\d+)", key):
            j = int(m[1])
            path = "b4.conv1" if j == 0 else f"b{2 ** ((j + 1) // 2 + 2)}.conv{1 - j % 2}"
            out[f"synthesis.{path}.noise_const"] = tensor.reshape(tensor.shape[-2:])
        elif m := re.fullmatch(r"(conv1|to_rgb1)\.(.+)", key):
            name, value = layer(m[2], tensor, torgb=m[1] == "to_rgb1")
            out[f"synthesis.b4.{'torgb' if m[1] == 'to_rgb1' else 'conv1'}.{name}"] = value
        elif m := re.fullmatch(r"convs\.(\d+)\.(.+)", key):
            i = int(m[1])
            name, value = layer(m[2], tensor, torgb=False)
            out[f"synthesis.b{2 ** (i // 2 + 3)}.conv{i % 2}.{name}"] = value
        elif m := re.fullmatch(r"to_rgbs\.(\d+)\.(.+)", key):
            name, value = layer(m[2], tensor, torgb=True)
            out[f"synthesis.b{2 ** (int(m[1]) + 3)}.torgb.{name}"] = value
        else:
            raise ValueError(f"unexpected rosinality key {key!r}")
    return out


def build_generator(
    rosinality_state: dict[str, torch.Tensor],
    latent_avg: torch.Tensor,
    init_kwargs: dict[str, Any],
    *,
    module_src: str = DEFAULT_MODULE_SRC,
) -> PersistentModule:
    """The NVIDIA ``Generator`` object tree holding the given rosinality-format weights."""
    t = _rosinality_to_nvidia_names(rosinality_state, latent_avg)
    w_dim = init_kwargs["w_dim"]
    resolution = init_kwargs["img_resolution"]
    synthesis_kwargs = dict(init_kwargs.get("synthesis_kwargs", {}))
    conv_clamp = synthesis_kwargs.get("conv_clamp")
    sqrt2 = np.sqrt(2)  # bias_act def_gain for lrelu: a numpy float64, pickled as numpy scalar

    def new(class_name: str, **kwargs: Any) -> PersistentModule:
        return PersistentModule(class_name, module_src=module_src, **kwargs)

    def fc(prefix: str, activation: str, lr: float, bias_init: float) -> PersistentModule:
        weight = t[f"{prefix}.weight"]
        return new(
            "FullyConnectedLayer",
            parameters={"weight": weight, "bias": t[f"{prefix}.bias"]},
            attributes={
                "activation": activation,
                "weight_gain": lr / np.sqrt(weight.shape[1]),
                "bias_gain": lr,
            },
            init_args=(weight.shape[1], weight.shape[0]),
            init_kwargs={"activation": activation, "lr_multiplier": lr, "bias_init": bias_init},
        )

    def synthesis_layer(prefix: str, res: int, up: int) -> PersistentModule:
        weight = t[f"{prefix}.weight"]
        noise = {}
        if f"{prefix}.noise_const" in t:
            noise = {"noise_const": t[f"{prefix}.noise_const"]}
        parameters = {"weight": weight, "bias": t[f"{prefix}.bias"]}
        if f"{prefix}.noise_strength" in t:
            parameters = {
                "weight": weight,
                "noise_strength": t[f"{prefix}.noise_strength"],
                "bias": t[f"{prefix}.bias"],
            }
        return new(
            "SynthesisLayer",
            parameters=parameters,
            buffers={"resample_filter": _resample_filter(), **noise},
            modules={"affine": fc(f"{prefix}.affine", "linear", 1, 1)},
            attributes={
                "resolution": res,
                "up": up,
                "use_noise": bool(noise),
                "activation": "lrelu",
                "conv_clamp": conv_clamp,
                "padding": 1,
                "act_gain": sqrt2,
            },
            init_args=(weight.shape[1], weight.shape[0]),
            init_kwargs={
                "w_dim": w_dim,
                "resolution": res,
                "up": up,
                "conv_clamp": conv_clamp,
                "channels_last": False,
            },
        )

    def torgb(prefix: str) -> PersistentModule:
        weight = t[f"{prefix}.weight"]
        return new(
            "ToRGBLayer",
            parameters={"weight": weight, "bias": t[f"{prefix}.bias"]},
            modules={"affine": fc(f"{prefix}.affine", "linear", 1, 1)},
            attributes={"conv_clamp": conv_clamp, "weight_gain": 1 / np.sqrt(weight.shape[1])},
            init_args=(weight.shape[1], weight.shape[0]),
            init_kwargs={"w_dim": w_dim, "conv_clamp": conv_clamp, "channels_last": False},
        )

    blocks: dict[str, PersistentModule] = {}
    for log_res in range(2, int(math.log2(resolution)) + 1):
        res = 2**log_res
        prefix = f"synthesis.b{res}"
        modules = {}
        if res > 4:
            modules["conv0"] = synthesis_layer(f"{prefix}.conv0", res, 2)
        modules["conv1"] = synthesis_layer(f"{prefix}.conv1", res, 1)
        modules["torgb"] = torgb(f"{prefix}.torgb")
        blocks[f"b{res}"] = new(
            "SynthesisBlock",
            parameters={"const": t["synthesis.b4.const"]} if res == 4 else {},
            buffers={"resample_filter": _resample_filter()},
            modules=modules,
            attributes={
                "in_channels": 0 if res == 4 else modules["conv0"].state["_init_args"][0],
                "w_dim": w_dim,
                "resolution": res,
                "img_channels": 3,
                "is_last": res == resolution,
                "architecture": "skip",
                "use_fp16": False,
                "channels_last": False,
                "num_conv": len(modules) - 1,
                "num_torgb": 1,
            },
        )
    synthesis = new(
        "SynthesisNetwork",
        modules=blocks,
        attributes={
            "w_dim": w_dim,
            "img_resolution": resolution,
            "img_resolution_log2": int(math.log2(resolution)),
            "img_channels": 3,
            "block_resolutions": [2**i for i in range(2, int(math.log2(resolution)) + 1)],
        },
        init_kwargs={"w_dim": w_dim, "img_resolution": resolution, "img_channels": 3},
    )
    n_mlp = sum(1 for key in t if re.fullmatch(r"mapping\.fc\d+\.weight", key))
    mapping = new(
        "MappingNetwork",
        buffers={"w_avg": t["mapping.w_avg"]},
        modules={f"fc{i}": fc(f"mapping.fc{i}", "lrelu", 0.01, 0) for i in range(n_mlp)},
        attributes={"z_dim": init_kwargs["z_dim"], "w_dim": w_dim, "num_layers": n_mlp},
    )
    return new(
        "Generator",
        modules={"synthesis": synthesis, "mapping": mapping},
        attributes={
            key: init_kwargs[key]
            for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
        },
        init_kwargs=init_kwargs,
    )


def write_nvidia_pickle(
    path: str | Path,
    rosinality_state: dict[str, torch.Tensor],
    latent_avg: torch.Tensor,
    init_kwargs: dict[str, Any],
    *,
    protocol: int = 4,
    numpy1_names: bool = False,
    include_g_ema: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    module_src: str = DEFAULT_MODULE_SRC,
) -> None:
    """Write ``{G, D, G_ema, training_set_kwargs, augment_pipe}`` as NVIDIA's training loop does.

    ``G_ema`` holds the given weights (rosinality layout in, NVIDIA layout written: const
    [C,4,4], conv weight [out,in,k,k], noise_const [R,R], noise_strength [], torgb bias [3],
    mapping.w_avg [w_dim]); ``G`` holds the same weights plus one, so a reader that takes the
    wrong network is caught. ``extra_tensors`` maps NVIDIA dotted paths to additional buffers
    of G_ema. ``numpy1_names`` (protocol 3 only) writes numpy scalars under numpy 1's
    ``numpy.core.multiarray.scalar``. ``module_src`` is stored as the pickled source code.
    """
    g_ema = build_generator(rosinality_state, latent_avg, init_kwargs, module_src=module_src)
    shifted = {key: value + 1 for key, value in rosinality_state.items()}
    g_train = build_generator(shifted, latent_avg + 1, init_kwargs, module_src=module_src)
    for dotted, tensor in (extra_tensors or {}).items():
        owner, _, name = dotted.rpartition(".")
        g_ema.submodule(owner).state["_buffers"][name] = tensor
    fc = PersistentModule(
        "FullyConnectedLayer",
        parameters={"weight": torch.randn(1, 8), "bias": torch.zeros(1)},
        attributes={"activation": "linear", "weight_gain": 1 / np.sqrt(8), "bias_gain": 1},
        init_args=(8, 1),
        module_src=module_src,
    )
    discriminator = PersistentModule(
        "Discriminator",
        modules={"b4": PersistentModule("DiscriminatorEpilogue", modules={"out": fc})},
        init_kwargs={"c_dim": 0, "img_resolution": init_kwargs["img_resolution"]},
        module_src=module_src,
    )
    snapshot: dict[str, Any] = {
        "training_set_kwargs": {
            "class_name": "training.dataset.ImageFolderDataset",
            "path": "datasets/tiny.zip",
            "use_labels": False,
            "max_size": 16,
            "xflip": False,
            "resolution": init_kwargs["img_resolution"],
        },
        "G": g_train,
        "D": discriminator,
        "augment_pipe": None,
    }
    if include_g_ema:
        snapshot["G_ema"] = g_ema
    with _stand_in_modules():
        data = pickle.dumps(snapshot, protocol=protocol)
    if numpy1_names:
        if protocol != 3:
            raise ValueError("numpy1_names needs protocol 3 (text GLOBAL opcodes)")
        data = data.replace(
            b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"
        )
    Path(path).write_bytes(data)
