"""The Z+ space (paper 002; raven38/hypershpere-gan-inversion, BDInvert part).

A Z+ code is one z per layer, [N,D], each on the sphere of radius √D, mapped through the mapping
network layer by layer (w_i = mapping(z_i)), with truncation ψ towards ``latent_avg`` on the
first ``truncation_layers`` layers (0.7 on 8 in the reference); plus a feature "basecode" F that
replaces the generator's feature at layer k (16×16 at k = 5, as the Feature-Style Encoder's).

* :func:`invert_zplus` — Adam (lr 0.01) on z and F with MSE + λ_p·P + λ_F·mean((F − F₀)²)
  (reference: λ_p = 10 for LPIPS, λ_F = 10, 1200 iterations), renormalising every z to the sphere
  after each step. The reference takes F₀ from a trained basecode encoder; here F₀ is what the
  caller passes (e.g. the Feature-Style Encoder's F) or G's own feature of the initial code.
* :func:`walk_on_sphere` — editing: move each layer's z along a direction in small steps,
  renormalising after each, so that the code never leaves the sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from vidinv.models import FEATURE_INDEX
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.train.losses import ImageLoss, fitting_setup, mse


def project_to_sphere(z: torch.Tensor) -> torch.Tensor:
    """Rescale each row (last dim D) to norm √D."""
    radius = math.sqrt(z.shape[-1])
    return z * (radius / z.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def zplus_to_wplus(generator: StyleGAN2Generator, z: torch.Tensor, truncation: float = 0.7,
                   truncation_layers: int = 8) -> torch.Tensor:
    """z [B,N,D] (or [N,D]) -> w+ [B,N,D]: mapping per layer, ψ on the first layers."""
    if z.ndim == 2:
        z = z[None]
    G = generator
    if z.shape[1:] != (G.n_latent, G.style_dim):
        raise ValueError(f"z must be [B,{G.n_latent},{G.style_dim}], got {tuple(z.shape)}")
    batch, n_latent, dim = z.shape
    w = G.mapping(z.reshape(batch * n_latent, dim)).reshape(batch, n_latent, dim)
    if truncation != 1.0 and truncation_layers > 0:
        avg = G.latent_avg.to(w.dtype)
        truncated = avg + truncation * (w - avg)
        layer = torch.arange(n_latent, device=w.device)[None, :, None]
        w = torch.where(layer < truncation_layers, truncated, w)
    return w


@dataclass
class ZPlusResult:
    """Inverted Z+ code ``z`` [B,N,D] (on the sphere), basecode ``features`` [B,C,h,w], the
    resulting ``w`` [B,N,D] and one record per step (``history[0]`` before any update,
    ``history[-1]`` the result)."""

    z: torch.Tensor
    features: torch.Tensor
    w: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def invert_zplus(generator: StyleGAN2Generator, target: torch.Tensor, steps: int = 1200,
                 lr: float = 0.01, *, feature_index: int = FEATURE_INDEX,
                 perceptual: ImageLoss | None = None, perceptual_weight: float = 10.0,
                 feature_weight: float = 10.0, truncation: float = 0.7,
                 truncation_layers: int = 8, z_init: torch.Tensor | None = None,
                 features_init: torch.Tensor | None = None, seed: int = 0) -> ZPlusResult:
    """Invert ``target`` [B,3,R,R] in [-1,1] into Z+ (z per layer + basecode F at k).

    ``z_init`` [B,N,D] (projected to the sphere) defaults to seeded Gaussian draws;
    ``features_init`` [B,C,h,w] defaults to G(w₀^{1:k}) of the initial code. ``perceptual``
    defaults to the single-scale :class:`StructureLoss` (the reference uses LPIPS).
    """
    G, perceptual = fitting_setup(generator, target, perceptual)
    batch = target.shape[0]
    if z_init is None:
        rng = torch.Generator().manual_seed(seed)
        z_init = torch.randn(batch, G.n_latent, G.style_dim, generator=rng)
    z = project_to_sphere(z_init.detach().to(target)).clone().requires_grad_(True)
    k = feature_index
    with torch.no_grad():
        if features_init is None:
            features_init = G.features(zplus_to_wplus(G, z, truncation, truncation_layers), k)
        features_init = features_init.detach().to(target)
    features = features_init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z, features], lr=lr)
    history: list[dict[str, float]] = []
    for step in range(steps + 1):
        w = zplus_to_wplus(G, z, truncation, truncation_layers)
        image = G.synthesis(w, features=features, k=k)
        terms = {"mse": mse(image, target).mean(),
                 perceptual.name: perceptual(image, target).mean(),
                 "feature_distance": (features - features_init).square().mean()}
        loss = (terms["mse"] + perceptual_weight * terms[perceptual.name]
                + feature_weight * terms["feature_distance"])
        record = {name: float(value.detach()) for name, value in terms.items()}
        record["loss"] = float(loss.detach())
        record["step"] = step
        history.append(record)
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            z.copy_(project_to_sphere(z))
    with torch.no_grad():
        w = zplus_to_wplus(G, z, truncation, truncation_layers)
    return ZPlusResult(z.detach().clone(), features.detach().clone(), w.detach(), history)


def walk_on_sphere(z: torch.Tensor, direction: torch.Tensor, steps: int, step_size: float,
                   return_path: bool = False) -> torch.Tensor:
    """Move every layer's z along ``direction`` in ``steps`` steps of ``step_size``, projecting
    back to the sphere after each.

    ``z``: [..., N, D] on the sphere; ``direction``: [D] (every layer), [N, D] (per layer) or
    broadcastable to ``z``; it is used as given (not normalised). A negative ``step_size`` walks
    the other way. Returns the final z (same shape), or with ``return_path`` the codes after each
    step, [steps + 1, ...] (index 0 = the start).
    """
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    direction = direction.to(z)
    path = [z]
    current = z
    for _ in range(steps):
        current = project_to_sphere(current + step_size * direction)
        path.append(current)
    return torch.stack(path) if return_path else current
