"""Pivot refinement (paper 000 §3.3): optimise the encoder's pivot code, held near where it was.

Starting from the encoder's w₀ (and optionally its F₀), minimise

    λ_mse·MSE(x̃, x) + λ_p·P(x̃, x) + λ_d·‖w − w₀‖₂ (+ λ_F·mean((F − F₀)²) when F is optimised)

with Adam, where x̃ = G(w) (or G(F, w^{k+1:N}) when F is optimised) and ‖·‖ is taken over the
whole W+ code of each image. With a hard ``radius`` the code is projected back onto the ball
‖w − w₀‖ ≤ radius after every step. ``space="w"`` optimises one shared code per image (a W
pivot stays in W, as cycle encoding's pivots are); ``"auto"`` picks W when w₀'s rows are equal.

The official CycleEncoding implementation refines differently: it fine-tunes the *encoder* for
15 steps on the target plus 7 training images and takes the target's code as the pivot. This
module implements the paper's description (optimisation with a distance regulariser), which needs
no training set at inversion time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from vidinv.models import FEATURE_INDEX
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.train.losses import ImageLoss, fitting_setup, mse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineConfig:
    """Refinement hyperparameters. ``radius`` None = no hard constraint."""

    steps: int = 100
    lr: float = 0.01
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    distance_weight: float = 0.01
    radius: float | None = None
    space: str = "auto"
    optimise_features: bool = False
    feature_weight: float = 1.0
    feature_index: int = FEATURE_INDEX

    def __post_init__(self) -> None:
        if self.space not in ("auto", "w", "w+"):
            raise ValueError(f"space must be 'auto', 'w' or 'w+', got {self.space!r}")
        if self.radius is not None and self.radius < 0:
            raise ValueError(f"radius must be ≥ 0, got {self.radius}")


@dataclass
class RefineResult:
    """The refined pivot ``w`` [B,N,D], ``features`` [B,C,h,w] (None unless optimised) and the
    loss terms before each update: ``history[0]`` is the start (w₀), ``history[-1]`` the
    result (``steps + 1`` records)."""

    w: torch.Tensor
    features: torch.Tensor | None
    history: list[dict[str, float]] = field(default_factory=list)


def code_distance(w: torch.Tensor, w_init: torch.Tensor) -> torch.Tensor:
    """‖w − w₀‖₂ over each image's whole W+ code: [B,N,D] -> [B]."""
    return (w - w_init).flatten(1).norm(dim=1)


def project_to_ball(w: torch.Tensor, w_init: torch.Tensor, radius: float) -> torch.Tensor:
    """Scale w − w₀ back to ``radius`` where it is longer (per image)."""
    distance = code_distance(w, w_init)
    factor = torch.clamp(radius / distance.clamp_min(1e-12), max=1.0)
    return w_init + (w - w_init) * factor.view(-1, *([1] * (w.ndim - 1)))


def refine_pivot(generator: StyleGAN2Generator, target: torch.Tensor, w_init: torch.Tensor,
                 features_init: torch.Tensor | None = None, config: RefineConfig | None = None,
                 perceptual: ImageLoss | None = None) -> RefineResult:
    """Refine the pivot ``w_init`` [B,N,D] towards ``target`` [B,3,R,R] in [-1,1].

    ``features_init`` [B,C,h,w] (the encoder's F) is the start of F when
    ``config.optimise_features``; without it F starts at G(w₀^{1:k}). ``perceptual`` defaults to
    the single-scale :class:`StructureLoss` (pass LPIPS when its weights exist).
    """
    config = config or RefineConfig()
    G, perceptual = fitting_setup(generator, target, perceptual)
    w_init = w_init.detach().to(target.device, target.dtype)
    space = config.space
    if space == "auto":
        space = "w" if bool((w_init == w_init[:, :1]).all()) else "w+"
    n_latent = w_init.shape[1]
    variable = (w_init[:, 0] if space == "w" else w_init).clone().requires_grad_(True)
    params = [variable]

    def full(code: torch.Tensor) -> torch.Tensor:
        return code[:, None].expand(-1, n_latent, -1) if space == "w" else code

    k = config.feature_index
    features = features_start = None
    if config.optimise_features:
        with torch.no_grad():
            features_start = (features_init.detach().to(target) if features_init is not None
                              else G.features(w_init, k))
        features = features_start.clone().requires_grad_(True)
        params.append(features)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    history: list[dict[str, float]] = []

    def evaluate() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = full(variable)
        image = G.synthesis(w) if features is None else G.synthesis(w, features=features, k=k)
        terms = {"mse": mse(image, target).mean(),
                 perceptual.name: perceptual(image, target).mean(),
                 "distance": code_distance(w, w_init).mean()}
        loss = (config.mse_weight * terms["mse"]
                + config.perceptual_weight * terms[perceptual.name]
                + config.distance_weight * terms["distance"])
        if features is not None:
            terms["feature_distance"] = (features - features_start).square().mean()
            loss = loss + config.feature_weight * terms["feature_distance"]
        return loss, terms

    for step in range(config.steps + 1):
        loss, terms = evaluate()
        record = {name: float(value.detach()) for name, value in terms.items()}
        record["loss"] = float(loss.detach())
        record["step"] = step
        history.append(record)
        if step == config.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.radius is not None:
            with torch.no_grad():
                projected = project_to_ball(full(variable), w_init, config.radius)
                variable.copy_(projected[:, 0] if space == "w" else projected)
    with torch.no_grad():
        w_final = full(variable).detach().clone()
    log.debug("pivot refined in %d steps (%s space)", config.steps, space)
    return RefineResult(w_final, features.detach().clone() if features is not None else None,
                        history)
