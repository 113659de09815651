"""Losses for encoder training, pivot refinement, PTI and Z+ inversion.

Every image loss takes two batches ``x``, ``y`` [B,3,H,W] float in [-1,1] and returns one value
per sample, [B]; callers take the mean. Each loss has a ``name`` that is what the logs call it,
and the name says what it is: the LPIPS distance is logged as ``lpips`` (``ms_lpips`` over the
pyramid) and only when real LPIPS weights were loaded; the substitute used without them is
logged as ``structure`` (``ms_structure``).

* :func:`mse` — per-pixel mean squared error.
* :class:`LPIPS` — VGG16 features + LPIPS v0.1 linear heads (Zhang et al. 2018), built only from
  two local files the user passes: a torchvision-layout ``vgg16`` state dict
  (``features.{i}.weight/bias``; e.g. ``vgg16-397923af.pth``) and LPIPS v0.1 ``vgg.pth``
  (``lin{0..4}.model.1.weight``). The official Feature-Style Encoder trains with the AlexNet
  variant of LPIPS (``lpips.LPIPS(net='alex')``); the VGG variant is the one PTI's perceptual
  tuning often uses and is what is implemented here.
* :class:`StructureLoss` / :class:`MultiScaleStructureLoss` — the documented substitute when no
  LPIPS weights exist: 1 − SSIM (Gaussian window) plus the L1 distance of the gradient
  magnitudes, per scale. It rewards matching local structure and edges; it is not a learned
  perceptual metric and its values are not comparable with LPIPS values.
* :class:`MultiScale` — the Feature-Style Encoder's multi-scale application (paper 003, Eq. 3):
  the loss summed over the image and its ×0.5, ×0.25 bilinear downscales.
* :func:`feature_reconstruction` — ‖F − G(w^{1:k})‖² (mean squared), paper 003 Eq. 4.
* :class:`IdentityLoss` — the multi-layer cosine loss of paper 003 Eq. 6 around a face
  embedding network the user brings as a ``torch.export`` file (``vidinv train encoder
  --identity-net``, :func:`load_identity_network`). No such weights ship with vidinv; without
  a network the term is off. (The paper's face-parsing term, Eq. 7, is not implemented: no
  face parser reaches this project.)

:class:`LossWeights` holds the λ of paper 003 / the official ``configs/001.yaml``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidinv.errors import CheckpointError, InputFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossWeights:
    """λ of each term (paper 003 Eqs. 5 and 8; official configs/001.yaml).

    ``perceptual`` weighs the multi-scale perceptual term on each of the two inversions (the
    paper's λ1 = 0.2 for LPIPS; the same λ is used for the substitute). ``identity`` only
    counts when a network is given.
    """

    mse: float = 1.0
    perceptual: float = 0.2
    identity: float = 0.1
    f_recon: float = 0.01


# --- pixel and feature losses ----------------------------------------------------------------


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error: [B,...] × [B,...] -> [B]."""
    return (x - y).square().flatten(1).mean(dim=1)


def feature_reconstruction(features: torch.Tensor, generator_features: torch.Tensor
                           ) -> torch.Tensor:
    """‖F − G(w^{1:k})‖² as a per-sample mean: [B,C,h,w] × [B,C,h,w] -> [B].

    The target is used as given; the encoder trainer passes it detached, as the official code
    does (only F is pulled towards the generator's feature space, w is not pulled towards F).
    """
    return mse(features, generator_features)


def downscale(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """``times`` bilinear ×0.5 steps (align_corners False, no antialias), as the official code."""
    for _ in range(times):
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    return x


class ImageLoss(nn.Module):
    """Base of the pairwise image losses: ``forward(x, y) -> [B]``.

    ``name`` is what logs call the loss; ``min_side`` is the smallest image side it accepts.
    """

    name = "image_loss"
    min_side = 1

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class MultiScale(ImageLoss):
    """Sum of ``loss`` over the image and ``n_scales − 1`` bilinear ×0.5 downscales.

    Paper 003 Eq. 3 (and the official ``LPIPS(..., multi_scale=True)``): Σ_{i<3} V(⌊x̃⌋_i, ⌊x⌋_i).
    Scales whose side would fall below ``loss.min_side`` are skipped (tiny test images); the
    full-resolution scale must fit.
    """

    def __init__(self, loss: ImageLoss, n_scales: int = 3) -> None:
        super().__init__()
        if n_scales < 1:
            raise ValueError(f"n_scales must be ≥ 1, got {n_scales}")
        self.loss = loss
        self.n_scales = n_scales
        self.name = f"ms_{loss.name}" if n_scales > 1 else loss.name
        self.min_side = loss.min_side

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.loss.min_side:
            raise ValueError(f"{self.loss.name} needs images of at least {self.loss.min_side} px, "
                             f"got {tuple(x.shape[-2:])}")
        total = self.loss(x, y)
        for _ in range(1, self.n_scales):
            x, y = downscale(x), downscale(y)
            if min(x.shape[-2:]) < self.loss.min_side:
                break
            total = total + self.loss(x, y)
        return total


# --- the substitute: SSIM + gradient magnitude -------------------------------------------------


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    taps = torch.exp(-coords.square() / (2 * sigma * sigma))
    taps = taps / taps.sum()
    return taps[:, None] * taps[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float = 2.0) -> torch.Tensor:
    """Per-sample mean SSIM of [B,C,H,W] images (Gaussian window, valid positions) -> [B].

    Wang et al. 2004 with K1 = 0.01, K2 = 0.03 and ``data_range`` 2 for images in [-1,1]. The
    window shrinks (σ in proportion) when an image side is smaller than 11.
    """
    side = min(x.shape[-2:])
    if side < window:
        window = side if side % 2 else side - 1
        sigma = sigma * window / 11
    window = max(window, 1)
    kernel = _gaussian_window(window, max(sigma, 1e-3), x.dtype, x.device)
    channels = x.shape[1]
    kernel = kernel[None, None].expand(channels, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def gradient_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """|∇x| from forward differences, [B,C,H,W] -> [B,C,H-1,W-1]."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return torch.sqrt(dx.square() + dy.square() + eps)


class StructureLoss(ImageLoss):
    """(1 − SSIM) + L1(|∇x̃|, |∇x|) at one scale: [B,3,H,W] × [B,3,H,W] -> [B].

    The substitute for LPIPS when its weights are not available; see the module docstring.
    """

    name = "structure"
    min_side = 4

    def __init__(self, gradient_weight: float = 1.0) -> None:
        super().__init__()
        self.gradient_weight = gradient_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        structure = 1.0 - ssim(x, y)
        edges = (gradient_magnitude(x) - gradient_magnitude(y)).abs().flatten(1).mean(dim=1)
        return structure + self.gradient_weight * edges


def fitting_setup(generator: nn.Module, target: torch.Tensor, perceptual: ImageLoss | None
                  ) -> tuple[nn.Module, ImageLoss]:
    """The frozen generator in eval mode and the perceptual loss on ``target``'s device, for
    fitting codes to ``target`` [B,3,R,R] (R the generator's resolution, else ValueError);
    ``perceptual`` defaults to the single-scale :class:`StructureLoss`."""
    G = generator.eval().requires_grad_(False)
    if target.shape[-1] != G.resolution:
        raise ValueError(f"target must be {G.resolution} px like the generator, got "
                         f"{tuple(target.shape)}")
    if perceptual is None:
        perceptual = StructureLoss()
    return G, perceptual.to(target.device)


class MultiScaleStructureLoss(MultiScale):
    """:class:`StructureLoss` summed over an image pyramid (full, ×0.5, ×0.25 by default)."""

    def __init__(self, n_scales: int = 3, gradient_weight: float = 1.0) -> None:
        super().__init__(StructureLoss(gradient_weight), n_scales)


# --- LPIPS (VGG16) ---------------------------------------------------------------------------

class LPIPS(ImageLoss):
    """LPIPS v0.1 distance with the VGG16 backbone as a training loss: [B,3,H,W] × [B,3,H,W] in
    [-1,1] -> [B]. The network is the metric's (:class:`vidinv.metrics.lpips.Lpips`, the one
    LPIPS in vidinv); this adds the loss interface, the smallest side and the CLI's errors.

    d(x, y) = Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² ), f̂ the channel-normalised VGG features
    at relu1_2 … relu5_3 of the scaled input, w_l the non-negative linear heads. Frozen.

    Build it with :meth:`from_files` (or from two state dicts); nothing is downloaded.
    """

    name = "lpips"
    min_side = 16  # four 2×2 pools before relu5_3

    def __init__(self, vgg_state: Mapping[str, torch.Tensor],
                 lin_state: Mapping[str, torch.Tensor], source: str = "LPIPS weights") -> None:
        from vidinv.metrics.lpips import Lpips

        super().__init__()
        self.model = Lpips("vgg16")
        self._load(vgg_state, lin_state, source)
        self.eval().requires_grad_(False)

    @classmethod
    def from_files(cls, vgg_path: str | Path | None, lin_path: str | Path | None) -> LPIPS:
        """Load from a torchvision vgg16 state dict and LPIPS v0.1 ``vgg.pth``; one-line errors."""
        if vgg_path is None:
            raise InputFileError("LPIPS needs VGG16 weights: pass --lpips-vgg PATH (a torchvision "
                                 "vgg16 state dict, e.g. vgg16-397923af.pth)")
        if lin_path is None:
            raise InputFileError("LPIPS needs its linear heads: pass --lpips-lin PATH (LPIPS "
                                 "v0.1 weights/v0.1/vgg.pth)")
        vgg_state = _load_state_file(Path(vgg_path), "--lpips-vgg", "a torchvision vgg16 "
                                     "state dict, e.g. vgg16-397923af.pth")
        lin_state = _load_state_file(Path(lin_path), "--lpips-lin", "LPIPS v0.1 "
                                     "weights/v0.1/vgg.pth")
        return cls(vgg_state, lin_state, source=f"{vgg_path} + {lin_path}")

    def _load(self, vgg_state: Mapping[str, torch.Tensor], lin_state: Mapping[str, torch.Tensor],
              source: str) -> None:
        vgg = {}
        for key, value in vgg_state.items():
            name = key[len("module."):] if key.startswith("module.") else key
            if name.startswith("classifier."):
                continue  # the fully connected head: LPIPS does not use it
            if not name.startswith("features."):
                raise CheckpointError(f"{source}: unexpected key {key!r} in the VGG16 state dict; "
                                      "pass a torchvision vgg16 state dict")
            vgg[name[len("features."):]] = value
        lins = {}
        for key, value in lin_state.items():
            parts = key.split(".")
            if not (parts[0].startswith("lin") and parts[-1] == "weight"):
                raise CheckpointError(f"{source}: unexpected key {key!r} in the LPIPS heads; pass "
                                      "LPIPS v0.1 weights/v0.1/vgg.pth")
            lins[f"{parts[0][3:]}.weight"] = value
        for module, state, what in ((self.model.features, vgg, "VGG16"),
                                    (self.model.lins, lins, "LPIPS")):
            expected = module.state_dict()
            for name, target in expected.items():
                if name not in state:
                    raise CheckpointError(f"{source}: {what} weights lack {name!r}; the file is "
                                          "incomplete or of another network")
                if tuple(state[name].shape) != tuple(target.shape):
                    raise CheckpointError(f"{source}: {what} {name!r} has shape "
                                          f"{tuple(state[name].shape)}, expected "
                                          f"{tuple(target.shape)}")
            module.load_state_dict({k: state[k].float() for k in expected}, strict=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(f"LPIPS needs images of at least {self.min_side} px, got "
                             f"{tuple(x.shape[-2:])}")
        return self.model(x, y)


def _load_state_file(path: Path, flag: str, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file; pass {flag} PATH ({what})")
    try:
        from vidinv.models.safe_load import torch_load

        content = torch_load(path, what)
    except Exception as error:  # torch raises many types for damaged files
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a readable state dict ({message[:120]}); pass "
                              f"{flag} PATH ({what})") from None
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor)
                                                 for v in content.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; pass {flag} PATH ({what})")
    return content


def build_perceptual(lpips_vgg: str | Path | None = None, lpips_lin: str | Path | None = None,
                     n_scales: int = 3) -> MultiScale:
    """Multi-scale LPIPS when both weight files are given, else the structure substitute.

    Passing only one of the two files is an error that names the other.
    """
    if lpips_vgg is None and lpips_lin is None:
        log.info("perceptual loss: MultiScaleStructureLoss (SSIM + gradient magnitude; a "
                 "substitute for LPIPS, whose weights were not given)")
        return MultiScaleStructureLoss(n_scales)
    loss = LPIPS.from_files(lpips_vgg, lpips_lin)
    log.info("perceptual loss: multi-scale LPIPS (VGG16) over %d scales", n_scales)
    return MultiScale(loss, n_scales)


# --- identity (a network provided by the user) -----------------------------------------------


class FeatureCosineLoss(ImageLoss):
    """Σ_i (1 − cos(N_i(x̃), N_i(x))) over the outputs of a frozen network N -> [B].

    ``network`` maps [B,3,S,S] in [-1,1] to a tensor or a list/tuple of tensors (one per
    layer); any normalisation it needs belongs inside it. Inputs are resized to ``input_size``
    (nearest, as the official code's ``F.interpolate`` default) before the network.
    """

    name = "feature_cosine"

    def __init__(self, network: nn.Module, input_size: int) -> None:
        super().__init__()
        try:
            network.eval()
        except NotImplementedError:  # a torch.export program keeps the mode it was exported in
            pass
        self.network = network.requires_grad_(False)
        self.input_size = input_size

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = (self.input_size, self.input_size)
        outs = self.network(F.interpolate(torch.cat([x, y]), size=size))
        if isinstance(outs, torch.Tensor):
            outs = [outs]
        batch = x.shape[0]
        total = x.new_zeros(batch)
        for out in outs:
            flat = out.flatten(1)
            total = total + 1 - F.cosine_similarity(flat[:batch], flat[batch:], dim=1, eps=1e-6)
        return total


class IdentityLoss(FeatureCosineLoss):
    """Multi-layer identity loss (paper 003 Eq. 6) around an ArcFace-like network (112 px)."""

    name = "identity"

    def __init__(self, network: nn.Module, input_size: int = 112) -> None:
        super().__init__(network, input_size)


def load_identity_network(path: str | Path, input_size: int = 112) -> IdentityLoss:
    """The identity loss around the face-embedding network in ``path``, a ``torch.export``
    program (``.pt2``: a graph and its weights, no pickled code).

    The network takes [B,3,S,S] in [-1,1] (S = ``input_size``; any normalisation it needs is
    inside it; B dynamic) and returns an embedding [B,…] or a list of per-layer features. Make
    one in eval mode with ``torch.export.save(torch.export.export(net, (images,),
    dynamic_shapes=({0: torch.export.Dim("batch")},)), FILE)``. It is checked on two black
    images before training starts.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file; pass --identity-net a torch.export "
                             "face-embedding network (.pt2)")
    try:
        network = torch.export.load(str(path)).module()
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a torch.export network ({first}); save it with "
                              "torch.export.save(torch.export.export(net, ...), FILE)") from None
    loss = IdentityLoss(network, input_size)
    probe = torch.zeros(2, 3, input_size, input_size)
    try:
        with torch.no_grad():
            loss(probe, probe)
    except Exception as error:  # noqa: BLE001 - any failure of the user's network: one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: the network does not take [B,3,{input_size},"
                              f"{input_size}] images in [-1,1] with a dynamic batch ({first}); "
                              "pass --identity-size to match it") from None
    return loss


def describe_identity(identity: nn.Module | None) -> str:
    """The log line that says whether the identity term is on."""
    return ("identity loss: on" if identity is not None else
            "identity loss: off (no --identity-net given; none ships with vidinv)")

