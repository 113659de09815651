"""Pivotal tuning (PTI, Roich et al.; danielroich/PTI): tune a copy of G so that G(w_pivot) = x.

A deep copy of the generator's synthesis network is optimised with Adam (lr 3e-4) on
λ_mse·MSE(G'(w_p), x) + λ_p·P(G'(w_p), x), for at most ``steps`` steps, stopping early once the
perceptual term is ≤ ``stop_threshold`` (checked before each update, as PTI does; PTI's 0.06 is
an LPIPS value — with another perceptual loss choose a threshold on its scale). Noise is the
generator's constant noise. The mapping network is not tuned (it never sees a gradient: the
pivot is already a w).

Locality regulariser (PTI's "ball holder", on in CycleEncoding's PTI): every
``locality_every`` steps, sample w = ψ-truncated mapping(z) (ψ 0.5), move it to
w_p + α·(w − w_p)/‖w − w_p‖ (α 30, the norm over the whole W+ code), and penalise
0.1·MSE + 0.1·P between the tuned and the original generator there.

The original generator is left untouched; :func:`save_tuned_generator` writes the copy as a new
native checkpoint.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidinv.models import FEATURE_INDEX
from vidinv.models.generator_io import save_generator
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.train.losses import ImageLoss, StructureLoss, mse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PTIConfig:
    """PTI hyperparameters (danielroich/PTI configs/hyperparameters.py; CycleEncoding's PTI)."""

    steps: int = 350
    lr: float = 3e-4
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    stop_threshold: float | None = 0.06
    locality: bool = True
    locality_alpha: float = 30.0
    locality_psi: float = 0.5
    locality_samples: int = 1
    locality_every: int = 1
    locality_mse_weight: float = 0.1
    locality_perceptual_weight: float = 0.1
    feature_index: int = FEATURE_INDEX
    seed: int = 0


@dataclass
class PTIResult:
    """The tuned copy, the loss terms before each update (plus, unless the threshold stopped it,
    a last record after the final update), and whether the threshold stopped it."""

    generator: StyleGAN2Generator
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def _clear_weight_caches(module: torch.nn.Module) -> None:
    """A deep copy also copies the synthesis layers' cached scaled weights; drop them so that
    they are rebuilt from the tuned parameters."""
    for sub in module.modules():
        if hasattr(sub, "_weight_cache"):
            sub._weight_cache = None


def locality_codes(generator: StyleGAN2Generator, w_pivot: torch.Tensor, n: int, alpha: float,
                   psi: float, rng: torch.Generator) -> torch.Tensor:
    """n codes [n,N,D] at distance ``alpha`` from the pivots, towards ψ-truncated samples.

    Sample i is paired with pivot ``i % B``.
    """
    G = generator
    with torch.no_grad():
        z = torch.randn(n, G.style_dim, generator=rng).to(w_pivot.device, w_pivot.dtype)
        w = G.mapping(z)
        w = G.latent_avg + psi * (w - G.latent_avg)
        w = w[:, None].expand(-1, G.n_latent, -1)
        pivots = w_pivot[torch.arange(n, device=w_pivot.device) % w_pivot.shape[0]]
        direction = w - pivots
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        return pivots + alpha * direction / norm


def tune_generator(generator: StyleGAN2Generator, w_pivot: torch.Tensor, target: torch.Tensor,
                   config: PTIConfig | None = None, perceptual: ImageLoss | None = None,
                   features: torch.Tensor | None = None) -> PTIResult:
    """Tune a copy of ``generator`` so that it renders ``target`` [B,3,R,R] from ``w_pivot``
    [B,N,D] (and ``features`` at ``config.feature_index`` when given).

    ``perceptual`` defaults to the single-scale :class:`StructureLoss` (PTI uses LPIPS; pass it
    when its weights exist).
    """
    config = config or PTIConfig()
    original = generator.eval().requires_grad_(False)
    if target.shape[-1] != original.resolution:
        raise ValueError(f"target must be {original.resolution} px like the generator, got "
                         f"{tuple(target.shape)}")
    if perceptual is None:
        perceptual = StructureLoss()
    perceptual = perceptual.to(target.device)
    tuned = copy.deepcopy(original)
    _clear_weight_caches(tuned)
    tuned.eval().requires_grad_(False)
    tuned.synthesis.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.synthesis.parameters(), lr=config.lr)
    rng = torch.Generator().manual_seed(config.seed)
    w_pivot = w_pivot.detach().to(target)
    k = config.feature_index
    if features is not None:
        features = features.detach().to(target)
    history: list[dict[str, float]] = []
    stopped = False
    for step in range(config.steps):
        image = (tuned.synthesis(w_pivot) if features is None
                 else tuned.synthesis(w_pivot, features=features, k=k))
        terms = {"mse": mse(image, target).mean(),
                 perceptual.name: perceptual(image, target).mean()}
        loss = (config.mse_weight * terms["mse"]
                + config.perceptual_weight * terms[perceptual.name])
        record = {name: float(value.detach()) for name, value in terms.items()}
        record["step"] = step
        if (config.stop_threshold is not None
                and record[perceptual.name] <= config.stop_threshold):
            record["loss"] = float(loss.detach())
            history.append(record)
            stopped = True
            log.info("PTI: %s %.4f ≤ %.4f at step %d; stopping", perceptual.name,
                     record[perceptual.name], config.stop_threshold, step)
            break
        if config.locality and step % config.locality_every == 0:
            codes = locality_codes(original, w_pivot, config.locality_samples,
                                   config.locality_alpha, config.locality_psi, rng)
            with torch.no_grad():
                reference = original.synthesis(codes)
            moved = tuned.synthesis(codes)
            terms["locality_mse"] = mse(moved, reference).mean()
            terms["locality_" + perceptual.name] = perceptual(moved, reference).mean()
            loss = (loss + config.locality_mse_weight * terms["locality_mse"]
                    + config.locality_perceptual_weight * terms["locality_" + perceptual.name])
            record["locality_mse"] = float(terms["locality_mse"].detach())
            record["locality_" + perceptual.name] = float(
                terms["locality_" + perceptual.name].detach())
        record["loss"] = float(loss.detach())
        history.append(record)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    tuned.eval().requires_grad_(False)
    _clear_weight_caches(tuned)
    if not stopped and config.steps > 0:
        with torch.no_grad():  # the result after the last update
            image = (tuned.synthesis(w_pivot) if features is None
                     else tuned.synthesis(w_pivot, features=features, k=k))
            final = {"mse": float(mse(image, target).mean()),
                     perceptual.name: float(perceptual(image, target).mean())}
        final["loss"] = (config.mse_weight * final["mse"]
                         + config.perceptual_weight * final[perceptual.name])
        final["step"] = config.steps
        history.append(final)
    return PTIResult(tuned, history, stopped)


def save_tuned_generator(result: PTIResult | StyleGAN2Generator, path: str | Path) -> Path:
    """Write the tuned generator as a native checkpoint (atomically)."""
    generator = result.generator if isinstance(result, PTIResult) else result
    return save_generator(generator, path)
