"""LPIPS (Zhang et al. 2018), computed only from weights the user already has on disk.

Nothing is downloaded and nothing is approximated: without both weight files the metric is
*unavailable* and reports say "n/a". Two files are needed:

* the backbone, a torchvision-layout state dict of ``vgg16`` or ``alexnet`` (``features.N.weight``
  / ``features.N.bias``; e.g. torchvision's ``vgg16-397923af.pth`` or ``alexnet-owt-7be5be79.pth``;
  ``classifier.*`` keys are ignored), as ``.pth`` (read with ``weights_only=True``) or
  ``.safetensors``;
* the LPIPS linear heads of the same backbone, the ``lpips`` package's ``weights/v0.1/vgg.pth``
  or ``alex.pth`` (``lin0.model.1.weight`` … ``lin4.model.1.weight``, each [1,C,1,1]).

Give them as arguments or as ``VIDINV_LPIPS_BACKBONE`` and ``VIDINV_LPIPS_LIN``.

The distance follows ``lpips.LPIPS(net=…, version='0.1')``: inputs in [-1,1] are shifted and
scaled per channel (shift (-.030, -.088, -.188), scale (.458, .448, .450)), the activations
after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (vgg16) or relu1…relu5 (alexnet) are unit-
normalised along channels (x / (‖x‖ + 1e-10)), their squared difference weighted by the linear
head, averaged over space and summed over the five layers.

Images are compared at ``size`` px (default 256, as the pSp/e4e/ReStyle evaluation scripts do;
the area filter shrinks larger crops, bicubic enlarges smaller ones).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidinv.metrics.errors import LpipsWeightsError

ENV_BACKBONE = "VIDINV_LPIPS_BACKBONE"
ENV_LIN = "VIDINV_LPIPS_LIN"

# torchvision ``features`` layouts: (kind, args) per index; "C" conv (in, out, kernel, stride,
# padding), "R" ReLU, "M" max-pool (kernel, stride).
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG16_TAPS = (4, 9, 16, 23, 30)  # slice ends: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_ALEX_TAPS = (2, 5, 8, 10, 12)  # relu1 … relu5
CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "alexnet": (64, 192, 384, 256, 256)}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


class Lpips(nn.Module):
    """LPIPS v0.1 on a vgg16 or alexnet backbone. ``forward(x, y)``: [B,3,H,W] in [-1,1] → [B]."""

    def __init__(self, net: str = "vgg16") -> None:
        super().__init__()
        if net not in CHANNELS:
            raise ValueError(f"net must be 'vgg16' or 'alexnet', not {net!r}")
        self.net = net
        self.features = _vgg16_features() if net == "vgg16" else _alexnet_features()
        self.taps = _VGG16_TAPS if net == "vgg16" else _ALEX_TAPS
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out, start = [], 0
        for end in self.taps:
            for layer in self.features[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        total = torch.zeros(batch, dtype=x.dtype, device=x.device)
        # x and y go through the backbone as one batch
        for lin, both in zip(self.lins, self._activations(torch.cat([x, y])), strict=True):
            both = both / (torch.sqrt(torch.sum(both**2, dim=1, keepdim=True)) + 1e-10)
            total = total + lin((both[:batch] - both[batch:]) ** 2).mean(dim=(1, 2, 3))
        return total


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LpipsWeightsError(f"{path}: no such {what} file; pass an existing file or leave "
                                "LPIPS off")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        from vidinv.models.safe_load import torch_load

        state = torch_load(path, what)
    except Exception as error:  # any unreadable file is the same user error
        raise LpipsWeightsError(f"{path}: not a readable {what} state dict ({error})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpipsWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()
            if isinstance(value, torch.Tensor)}


def _lin_weights(state: dict[str, torch.Tensor], path: Path) -> tuple[str, list[torch.Tensor]]:
    weights = []
    for index in range(5):
        for key in (f"lin{index}.model.1.weight", f"lin{index}.weight"):
            if key in state:
                weights.append(state[key])
                break
        else:
            raise LpipsWeightsError(f"{path}: has no lin{index}.model.1.weight; expected the "
                                    "lpips package's weights/v0.1/vgg.pth or alex.pth")
    channels = tuple(int(w.shape[1]) for w in weights)
    for net, expected in CHANNELS.items():
        if channels == expected:
            return net, weights
    raise LpipsWeightsError(f"{path}: linear heads of {channels} channels fit neither vgg16 "
                            f"{CHANNELS['vgg16']} nor alexnet {CHANNELS['alexnet']}")


def load_lpips(backbone: str | Path, lin: str | Path) -> Lpips:
    """An eval-mode :class:`Lpips` from a torchvision backbone file and LPIPS linear heads.

    The backbone kind (vgg16 or alexnet) follows from the heads; every ``features.*`` key the
    backbone needs must be in its file with the right shape, else :class:`LpipsWeightsError`.
    """
    backbone, lin = Path(backbone), Path(lin)
    net, lin_weights = _lin_weights(_read_state_dict(lin, "LPIPS linear-head"), lin)
    model = Lpips(net)
    state = _read_state_dict(backbone, f"torchvision {net} backbone")
    wanted = model.features.state_dict()
    for key, tensor in wanted.items():
        source = state.get(f"features.{key}")
        if source is None:
            raise LpipsWeightsError(f"{backbone}: has no features.{key}; expected a torchvision "
                                    f"{net} state dict (the heads in {lin} are for {net})")
        if tuple(source.shape) != tuple(tensor.shape):
            raise LpipsWeightsError(f"{backbone}: features.{key} is {tuple(source.shape)}, "
                                    f"{net} needs {tuple(tensor.shape)}")
        wanted[key] = source.float()
    model.features.load_state_dict(wanted, strict=True)
    with torch.no_grad():
        for conv, weight in zip(model.lins, lin_weights, strict=True):
            conv.weight.copy_(weight.float().reshape(conv.weight.shape))
    return model.eval().requires_grad_(False)


class LpipsMetric:
    """LPIPS distance of two uint8 RGB images, resized to ``size`` px. ``name`` says which."""

    def __init__(self, model: Lpips, size: int = 256, backbone_path: str | None = None) -> None:
        self.model = model
        self.size = int(size)
        self.name = f"LPIPS v0.1 ({model.net}) at {self.size} px"
        self.backbone_path = backbone_path

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        from vidinv.metrics.image import as_uint8_rgb, resize_to

        image = resize_to(as_uint8_rgb(image), self.size)
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    def __call__(self, a: np.ndarray, b) -> float:
        with torch.no_grad():
            return float(self.model(self._tensor(a), self._tensor(b))[0])


def lpips_from_paths(backbone: str | Path | None = None, lin: str | Path | None = None,
                     size: int = 256) -> LpipsMetric | None:
    """An :class:`LpipsMetric` from the given files or the environment; None when neither names
    any file (LPIPS then reports "n/a"). Naming only one of the two is an error."""
    backbone = backbone or os.environ.get(ENV_BACKBONE) or None
    lin = lin or os.environ.get(ENV_LIN) or None
    if backbone is None and lin is None:
        return None
    if backbone is None or lin is None:
        raise LpipsWeightsError(
            "LPIPS needs both files: --lpips-backbone (torchvision vgg16/alexnet state dict, or "
            f"{ENV_BACKBONE}) and --lpips-lin (lpips v0.1 vgg.pth/alex.pth, or {ENV_LIN})")
    return LpipsMetric(load_lpips(backbone, lin), size=size, backbone_path=str(backbone))
