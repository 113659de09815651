"""Cycle encoding (paper 000/001; xudonmao/CycleEncoding): train the encoder W → W+ → W.

The encoder's codes are written as one base code plus per-layer deltas::

    w_i = w_0 + m_i · (raw_i − raw_0)        (m_0 = 1; raw = the encoder's own W+ output)

so with every delta active the encoder is the ordinary Feature-Style Encoder (w = raw) and with
none active it outputs ``raw_0`` on every layer (pure W). :class:`CycleSchedule` says which
deltas are active at a step, and how strong the delta-norm regulariser and the latent
discriminator are:

* W → W+ (e4e's progressive training): delta i (1 ≤ i < N) is enabled at
  ``progressive_start + progressive_every · (i − 1)`` (paper: 20000 + 2000·(i − 1)).
* W+ → W, from ``wplus_to_w_start`` (paper: 500k): at ``wplus_to_w_start + j · grow_every``
  (j ≥ 0; paper: every 10k) the discriminator λ is halved, and, before ``removal_start``, the
  delta-norm λ is multiplied by 1.2. The official code fires at ``step % 10000 == 5``, i.e. five
  steps after each multiple; here the events fall on the multiples.
* From ``removal_start`` (paper: 650k) one delta is removed every ``remove_every`` steps (paper:
  4000), the highest layer first: delta j is removed at
  ``removal_start + remove_every · (N − 1 − j)``; pure W at ``removal_start + remove_every ·
  (N − 2)`` (714k for N = 18).

:meth:`CycleSchedule.paper` gives these numbers scaled by a factor (``scale=1e-4`` runs a whole
cycle in about 70 steps, for tests and smoke runs).

A newly enabled delta starts at zero: the trainer copies ``styles[0]`` into ``styles[i]`` at
the step delta i is enabled (e4e's deltas start small but non-zero). :func:`tie_inactive_styles`
does the same for every inactive layer before an encoder is saved, so the saved module's plain
``forward`` equals the masked output (identical rows once the cycle reaches pure W).

Also here: the delta-norm regulariser (Σ_i ‖w_i − w_0‖₂, e4e's ``delta_norm`` 2) and e4e's
latent discriminator (an MLP on single w codes, non-saturating loss, lazy R1). e4e's pools of
past codes (``--use_w_pool``) are not implemented.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PHASES = ("w_to_wplus", "wplus_to_w", "removal", "pure_w")


@dataclass(frozen=True)
class CycleState:
    """What the schedule prescribes at one step.

    ``active``: [n_latent] bools, True where layer i uses its own code (index 0 always True);
    ``delta_norm_weight`` and ``disc_weight``: the λ of the two regularisers; ``phase``: one of
    ``PHASES``.
    """

    active: tuple[bool, ...]
    delta_norm_weight: float
    disc_weight: float
    phase: str

    @property
    def n_active_deltas(self) -> int:
        return sum(self.active) - 1

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``active, delta_norm_weight, disc_weight, phase``."""
        return iter((self.active, self.delta_norm_weight, self.disc_weight, self.phase))


@dataclass(frozen=True)
class CycleSchedule:
    """Stage boundaries and regulariser weights of a W → W+ → W cycle (see the module doc).

    Steps count completed training steps from 0. Defaults are the paper's (N = 18).
    """

    n_latent: int = 18
    progressive_start: int = 20_000
    progressive_every: int = 2_000
    wplus_to_w_start: int = 500_000
    grow_every: int = 10_000
    removal_start: int = 650_000
    remove_every: int = 4_000
    delta_norm_weight: float = 2e-4
    disc_weight: float = 0.1
    grow_factor: float = 1.2
    disc_decay: float = 0.5

    def __post_init__(self) -> None:
        if self.n_latent < 2:
            raise ValueError(f"n_latent must be ≥ 2, got {self.n_latent}")
        for name in ("progressive_every", "grow_every", "remove_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 <= self.progressive_start <= self.wplus_to_w_start <= self.removal_start:
            raise ValueError("need 0 ≤ progressive_start ≤ wplus_to_w_start ≤ removal_start, got "
                             f"{self.progressive_start}, {self.wplus_to_w_start}, "
                             f"{self.removal_start}")

    @classmethod
    def paper(cls, n_latent: int = 18, scale: float = 1.0) -> CycleSchedule:
        """The paper's schedule with every step count multiplied by ``scale`` (intervals ≥ 1)."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")

        def at(steps: int) -> int:
            return int(round(steps * scale))

        def every(steps: int) -> int:
            return max(1, int(round(steps * scale)))

        return cls(n_latent=n_latent, progressive_start=at(20_000),
                   progressive_every=every(2_000), wplus_to_w_start=at(500_000),
                   grow_every=every(10_000), removal_start=at(650_000),
                   remove_every=every(4_000))

    # --- boundaries ------------------------------------------------------------------------

    def enable_step(self, layer: int) -> int:
        """The step at which delta ``layer`` (1 ≤ layer < N) is enabled."""
        self._check_delta(layer)
        return self.progressive_start + self.progressive_every * (layer - 1)

    def removal_step(self, layer: int) -> int:
        """The step at which delta ``layer`` is removed (highest layer first)."""
        self._check_delta(layer)
        return self.removal_start + self.remove_every * (self.n_latent - 1 - layer)

    @property
    def end(self) -> int:
        """First step of pure W (every delta removed)."""
        return self.removal_step(1)

    def _check_delta(self, layer: int) -> None:
        if not 1 <= layer < self.n_latent:
            raise ValueError(f"delta index must be in [1, {self.n_latent - 1}], got {layer}")

    def _events(self, step: int, before: int | None = None) -> int:
        """Number of W+ → W events (wplus_to_w_start + j·grow_every) at or before ``step``
        (and before ``before`` when given)."""
        last = step if before is None else min(step, before - 1)
        if last < self.wplus_to_w_start:
            return 0
        return (last - self.wplus_to_w_start) // self.grow_every + 1

    # --- the pure function ------------------------------------------------------------------

    def state(self, step: int) -> CycleState:
        """Active layers, delta-norm λ, discriminator λ and phase at ``step`` (≥ 0)."""
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        active = [True] + [self.enable_step(i) <= step < self.removal_step(i)
                           for i in range(1, self.n_latent)]
        delta_weight = self.delta_norm_weight * self.grow_factor ** self._events(
            step, before=self.removal_start)
        disc_weight = self.disc_weight * self.disc_decay ** self._events(step)
        if step < self.wplus_to_w_start:
            phase = "w_to_wplus"
        elif step < self.removal_start:
            phase = "wplus_to_w"
        elif step < self.end:
            phase = "removal"
        else:
            phase = "pure_w"
        return CycleState(tuple(active), delta_weight, disc_weight, phase)


@dataclass(frozen=True)
class CycleConfig:
    """Cycle-encoding training: the schedule plus the latent discriminator's settings.

    Discriminator (e4e/CycleEncoding defaults): ``disc_layers`` Linear layers (512 wide, leaky
    ReLU 0.2), Adam ``disc_lr`` 2e-5, R1 γ ``r1`` 10 applied every ``r1_every`` 16 steps (lazy,
    scaled by the interval). ``discriminator=False`` drops the adversarial term altogether.
    """

    schedule: CycleSchedule = CycleSchedule()
    discriminator: bool = True
    disc_layers: int = 4
    disc_lr: float = 2e-5
    r1: float = 10.0
    r1_every: int = 16


def active_mask(state: CycleState, device: torch.device | None = None) -> torch.Tensor:
    """[N] bool tensor of ``state.active``."""
    return torch.tensor(state.active, dtype=torch.bool, device=device)


def mask_deltas(w: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """w [B,N,D] (the encoder's raw codes) -> codes where inactive layers take w[:, 0].

    Equals ``w_0 + m_i · (w_i − w_0)``; inactive layers get no gradient through their own code.
    """
    base = w[:, :1].expand_as(w)
    return torch.where(active.to(w.device)[None, :, None], w, base)


def delta_norm_loss(w: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Σ over active layers i ≥ 1 of ‖w_i − w_0‖₂, averaged over the batch -> scalar."""
    deltas = (w[:, 1:] - w[:, :1]).norm(dim=2)  # [B,N-1]
    keep = active.to(w.device)[1:].to(w.dtype)
    return (deltas * keep).sum(dim=1).mean()


@torch.no_grad()
def tie_inactive_styles(encoder: nn.Module, active: torch.Tensor | tuple[bool, ...]) -> None:
    """Make the encoder's plain ``forward`` produce the masked codes: every inactive layer i
    gets a copy of ``styles[0]`` (weight, bias) and of ``latent_avg[0]``."""
    active = torch.as_tensor(active, dtype=torch.bool)
    for i in range(1, len(encoder.styles)):
        if not bool(active[i]):
            encoder.styles[i].weight.copy_(encoder.styles[0].weight)
            encoder.styles[i].bias.copy_(encoder.styles[0].bias)
            encoder.latent_avg[i].copy_(encoder.latent_avg[0])


class LatentDiscriminator(nn.Module):
    """e4e's latent-code discriminator: w [B,D] -> logit [B,1] (MLP, leaky ReLU 0.2)."""

    def __init__(self, style_dim: int = 512, n_layers: int = 4) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
        layers: list[nn.Module] = []
        for _ in range(n_layers - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.mlp(w)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for D: softplus(−D(real)) + softplus(D(fake)), means."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def encoder_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss for the encoder: softplus(−D(E(x)))."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: nn.Module, real_w: torch.Tensor) -> torch.Tensor:
    """E‖∇_w D(w)‖² on real codes (R1)."""
    real_w = real_w.detach().requires_grad_(True)
    logits = discriminator(real_w)
    (grad,) = torch.autograd.grad(logits.sum(), real_w, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()
