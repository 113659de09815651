"""Training a Feature-Style Encoder against a frozen StyleGAN2 generator (paper 003 §4).

Each step:

* a batch of half synthetic images (z -> w = mapping(z) -> G.synthesis(w) with the generator's
  constant noise; the true w is known) and half real aligned faces (a folder of images, resized
  to the generator's resolution; optional — without it the whole batch is synthetic);
* the encoder sees the batch brought to its input size (:func:`prepare_input`) and returns
  (w, F);
* two inversions: x̃1 = G(w) and x̃2 = G(F̃, w^{k+1:N}) with the ramped feature
  F̃ = (1 − s)·G(w^{1:k}) + s·F, s = min(1, ``feature_ramp_rate`` · step) (the official
  ``feature_scale``);
* loss = λ_mse·MSE(x̃1, x) on the synthetic half + λ_p·(P(x̃1, x) + P(x̃2, x)) on the whole
  batch (P the multi-scale perceptual loss) + λ_f·‖F − sg(G(w^{1:k}))‖² (+ λ_id times the
  identity term on both inversions when a face-embedding network is given) (+ the
  cycle-encoding terms, :mod:`vidinv.train.cycle`).

Differences from the official code, on purpose: the optimiser is Adam (the official
``configs/001.yaml`` uses Ranger — RAdam + Lookahead — which torch does not ship) with the same
lr 1e-4 and betas (0.95, 0.999), divided by 10 at ``lr_decay_step`` (the official StepLR steps
per epoch of 10k iterations, so 100k iterations); the official code renders *both* inversions
with the blended feature (its x̃1 is not G(w)), here x̃1 is G(w) as the paper writes.

Checkpoints (``out_dir``): ``encoder.safetensors`` (native, :func:`save_encoder`, loadable with
``load_encoder``) and ``training_state.safetensors`` (step, the raw encoder weights, Adam state,
the sampling RNG, the discriminator and its optimiser, the configs) — the second alone is
enough to resume exactly. ``log.jsonl`` gets one JSON record per logged step.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidinv.errors import CheckpointError, InputFileError, VidinvError
from vidinv.models import FEATURE_INDEX
from vidinv.models.encoder import FeatureStyleEncoder, check_encoder_matches, prepare_input
from vidinv.models.encoder_io import save_encoder
from vidinv.models.folder import ENCODER_FILE, TRAINING_STATE_FILE
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.train.cycle import (
    CycleConfig,
    CycleSchedule,
    CycleState,
    LatentDiscriminator,
    active_mask,
    delta_norm_loss,
    discriminator_loss,
    encoder_adversarial_loss,
    mask_deltas,
    r1_penalty,
    tie_inactive_styles,
)
from vidinv.train.losses import (
    IdentityLoss,
    ImageLoss,
    LossWeights,
    MultiScaleStructureLoss,
    describe_identity,
    feature_reconstruction,
    mse,
)
from vidinv.train.state import deferred_interrupt, load_state, save_state

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
_STATE_FORMAT = 1


@dataclass(frozen=True)
class EncoderTrainingConfig:
    """Hyperparameters of :class:`EncoderTrainer` (defaults: paper 003 / configs/001.yaml).

    ``batch_size``: images per step, half synthetic and half real when real images are given
    (paper: 4). ``feature_index``: k, the generator feature the encoder predicts (5).
    ``truncation``: ψ for the synthetic samples (official 1, none). ``checkpoint_every`` and
    ``log_every`` count steps. ``cycle``: cycle-encoding mode when set.
    """

    batch_size: int = 4
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    lr_decay_step: int = 100_000
    lr_decay_gamma: float = 0.1
    feature_index: int = FEATURE_INDEX
    feature_ramp_rate: float = 1e-4
    weights: LossWeights = field(default_factory=LossWeights)
    truncation: float = 1.0
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    cycle: CycleConfig | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.lr_decay_step < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("lr_decay_step, checkpoint_every and log_every must be ≥ 1")
        for name in ("lr", "lr_decay_gamma", "feature_ramp_rate", "truncation"):
            value = getattr(self, name)
            if not 0.0 < value < float("inf"):  # NaN fails too
                raise ValueError(f"{name} must be a finite number > 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderTrainingConfig:
        data = dict(data)
        # "parsing": the face-parsing weight of runs made before that term was removed (no
        # command could give it a network, so it never counted).
        data["weights"] = LossWeights(**{name: value for name, value in data["weights"].items()
                                         if name != "parsing"})
        data["betas"] = tuple(data["betas"])
        if data.get("cycle") is not None:
            cycle = dict(data["cycle"])
            cycle["schedule"] = CycleSchedule(**cycle["schedule"])
            data["cycle"] = CycleConfig(**cycle)
        return cls(**data)


def feature_scale(step: int, ramp_rate: float) -> float:
    """s = min(1, ramp_rate · step): the weight of the encoder's F in the blended feature."""
    return min(1.0, ramp_rate * step)


def blend_features(generator_features: torch.Tensor, features: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """(1 − s)·G(w^{1:k}) + s·F, both [B,C,h,w]."""
    return (1.0 - scale) * generator_features + scale * features


def step_lr(step: int, config: EncoderTrainingConfig) -> float:
    """lr at ``step``: lr · γ^(step // lr_decay_step) (StepLR)."""
    return config.lr * config.lr_decay_gamma ** (step // config.lr_decay_step)


# --- real images -----------------------------------------------------------------------------


class ImageSource(Protocol):
    """Real training images: ``sample(n, generator) -> [n,3,S,S]`` float in [-1,1]."""

    def __len__(self) -> int: ...

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


def _to_tensor(image: np.ndarray, size: int, source: str) -> torch.Tensor:
    """[H,W,3] uint8 RGB -> [3,size,size] float in [-1,1] (antialiased bilinear resize)."""
    if image.shape[0] != image.shape[1]:
        raise InputFileError(f"{source}: {image.shape[1]}×{image.shape[0]} is not square; pass "
                             "aligned face crops")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    tensor = tensor[None] / 127.5 - 1.0
    if tensor.shape[-1] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=tensor.shape[-1] > size)
    return tensor[0]


class ImageFolderSource:
    """A folder of aligned face images, read on demand and resized to ``size`` px."""

    def __init__(self, path: str | Path, size: int) -> None:
        from vidinv.video.errors import VideoInputError
        from vidinv.video.images import ImageSequenceReader

        try:
            self.paths = ImageSequenceReader(path).paths
        except VideoInputError as error:
            raise InputFileError(f"{error}") from None
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        from vidinv.video.images import read_image

        indices = torch.randint(len(self.paths), (n,), generator=generator).tolist()
        return torch.stack([_to_tensor(read_image(self.paths[i]), self.size, str(self.paths[i]))
                            for i in indices])


class TensorImageSource:
    """Real images already in memory: [M,3,H,H] float in [-1,1], resized to ``size``."""

    def __init__(self, images: torch.Tensor, size: int) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be [M,3,H,H], got {tuple(images.shape)}")
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > size)
        self.images = images.float()

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        indices = torch.randint(len(self), (n,), generator=generator)
        return self.images[indices]


# --- Ctrl-C ----------------------------------------------------------------------------------




# --- the trainer -----------------------------------------------------------------------------


class EncoderTrainer:
    """Train ``encoder`` to invert the frozen ``generator`` (see the module docstring).

    Args:
        generator: a :class:`StyleGAN2Generator`; frozen here (eval, no gradients).
        encoder: a :class:`FeatureStyleEncoder` matching the generator at ``feature_index``
            (:func:`check_encoder_matches`). If its ``latent_avg`` is all zeros it is set to the
            generator's.
        config: :class:`EncoderTrainingConfig`.
        perceptual: an :class:`ImageLoss` applied to both inversions (usually multi-scale);
            None = :class:`MultiScaleStructureLoss` (the LPIPS substitute, logged as such).
        identity: optional network for the identity loss (an ``IdentityLoss`` or a bare
            network, wrapped); off when None.
        real_images: an :class:`ImageSource` of aligned faces, or None (all synthetic).
        out_dir: where checkpoints and ``log.jsonl`` go (None: nothing is written).
    """

    def __init__(self, generator: StyleGAN2Generator, encoder: FeatureStyleEncoder,
                 config: EncoderTrainingConfig | None = None, *,
                 perceptual: ImageLoss | None = None, identity: nn.Module | None = None,
                 real_images: ImageSource | None = None,
                 out_dir: str | Path | None = None) -> None:
        self.config = config or EncoderTrainingConfig()
        check_encoder_matches(encoder, generator, self.config.feature_index)
        self.device = generator.latent_avg.device
        self.generator = generator.eval().requires_grad_(False)
        self.encoder = encoder.to(self.device).train()
        if not bool(self.encoder.latent_avg.any()):
            self.encoder.set_latent_avg(generator.latent_avg)
        if perceptual is None:
            perceptual = MultiScaleStructureLoss()
            log.info("perceptual loss: %s (a substitute for LPIPS, whose weights were not "
                     "given; logged as %r)", type(perceptual).__name__, perceptual.name)
        self.perceptual = perceptual.to(self.device)
        if identity is not None and not isinstance(identity, IdentityLoss):
            identity = IdentityLoss(identity)
        self.identity = identity.to(self.device) if identity is not None else None
        log.info(describe_identity(self.identity))
        self.real_images = real_images
        self.out_dir = Path(out_dir) if out_dir is not None else None

        config = self.config
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=config.lr,
                                          betas=config.betas)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.cycle = config.cycle
        self.discriminator: LatentDiscriminator | None = None
        self.disc_optimizer: torch.optim.Optimizer | None = None
        if self.cycle is not None:
            if self.cycle.schedule.n_latent != encoder.n_latent:
                raise ValueError(f"cycle schedule is for {self.cycle.schedule.n_latent} codes, "
                                 f"the encoder has {encoder.n_latent}")
            if self.cycle.discriminator:
                torch.manual_seed(config.seed)
                self.discriminator = LatentDiscriminator(
                    encoder.style_dim, self.cycle.disc_layers).to(self.device)
                self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(),
                                                       lr=self.cycle.disc_lr)

    # --- one step ------------------------------------------------------------------------

    def cycle_state(self, step: int | None = None) -> CycleState | None:
        """The cycle schedule's state at ``step`` (default: the next step), or None."""
        if self.cycle is None:
            return None
        return self.cycle.schedule.state(self.step if step is None else step)

    def sample_batch(self) -> tuple[torch.Tensor, int]:
        """Targets [B,3,R,R] in [-1,1] at the generator's resolution (synthetic first) and the
        number of synthetic images."""
        batch = self.config.batch_size
        n_real = batch // 2 if self.real_images is not None else 0
        n_syn = batch - n_real
        G = self.generator
        with torch.no_grad():
            z = torch.randn(n_syn, G.style_dim, generator=self.rng).to(self.device)
            w = G.mapping(z)
            if self.config.truncation != 1.0:
                w = G.latent_avg + self.config.truncation * (w - G.latent_avg)
            targets = G.synthesis(w[:, None].expand(-1, G.n_latent, -1))
            if n_real:
                real = self.real_images.sample(n_real, self.rng).to(self.device, targets.dtype)
                if real.shape[-1] != G.resolution:
                    real = F.interpolate(real, size=(G.resolution, G.resolution),
                                         mode="bilinear", align_corners=False,
                                         antialias=real.shape[-1] > G.resolution)
                targets = torch.cat([targets, real])
        return targets, n_syn

    def encode(self, targets: torch.Tensor, state: CycleState | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder pass: (w used for rendering, the encoder's raw w, F)."""
        w_raw, features = self.encoder(prepare_input(targets, self.encoder.input_size))
        w = w_raw if state is None else mask_deltas(w_raw, active_mask(state))
        return w, w_raw, features

    def render(self, w: torch.Tensor, features: torch.Tensor, step: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x̃1 = G(w), x̃2 = G(F̃, w^{k+1:N}) with the ramped F̃, and G(w^{1:k})."""
        k = self.config.feature_index
        generator_features = self.generator.features(w, k)
        scale = feature_scale(step, self.config.feature_ramp_rate)
        blended = blend_features(generator_features, features, scale)
        x1 = self.generator.synthesis(w)
        x2 = self.generator.synthesis(w, features=blended, k=k)
        return x1, x2, generator_features

    def training_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss terms (floats) of this step."""
        config, weights = self.config, self.config.weights
        step = self.step
        lr = step_lr(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        state = self.cycle_state(step)
        if state is not None:
            self._enable_new_deltas(step)
        targets, n_syn = self.sample_batch()
        self.encoder.train()
        w, w_raw, features = self.encode(targets, state)
        x1, x2, generator_features = self.render(w, features, step)

        terms: dict[str, torch.Tensor] = {}
        total = targets.new_zeros(())
        if weights.mse and n_syn:
            terms["mse"] = mse(x1[:n_syn], targets[:n_syn]).mean()
            total = total + weights.mse * terms["mse"]
        if weights.perceptual:
            value = self.perceptual(x1, targets).mean() + self.perceptual(x2, targets).mean()
            terms[self.perceptual.name] = value
            total = total + weights.perceptual * value
        if weights.f_recon:
            terms["f_recon"] = feature_reconstruction(features, generator_features.detach()).mean()
            total = total + weights.f_recon * terms["f_recon"]
        if self.identity is not None and weights.identity:
            value = self.identity(x1, targets).mean() + self.identity(x2, targets).mean()
            terms[self.identity.name] = value
            total = total + weights.identity * value
        fake_w = None
        if state is not None:
            mask = active_mask(state, self.device)
            if state.delta_norm_weight and state.n_active_deltas:
                terms["delta_norm"] = delta_norm_loss(w, mask)
                total = total + state.delta_norm_weight * terms["delta_norm"]
            if self.discriminator is not None and state.disc_weight:
                self.discriminator.requires_grad_(False)
                codes = w[:, mask]  # [B, n_active, D]: each active layer's code is a sample
                terms["adversarial"] = encoder_adversarial_loss(
                    self.discriminator(codes.reshape(-1, codes.shape[-1])))
                total = total + state.disc_weight * terms["adversarial"]
                fake_w = w[:, 0].detach()
        terms["total"] = total
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        record = {name: float(value.detach()) for name, value in terms.items()}
        if fake_w is not None:
            record.update(self._discriminator_step(fake_w, step))
        record["lr"] = lr
        record["feature_scale"] = feature_scale(step, config.feature_ramp_rate)
        if state is not None:
            record["active_deltas"] = state.n_active_deltas
            record["delta_norm_weight"] = state.delta_norm_weight
            record["disc_weight"] = state.disc_weight
        self.step += 1
        return record

    def _discriminator_step(self, fake_w: torch.Tensor, step: int) -> dict[str, float]:
        """One D update on real codes mapping(z) and the encoder's w_0 (+ lazy R1)."""
        assert self.discriminator is not None and self.disc_optimizer is not None
        cycle = self.cycle
        D = self.discriminator.requires_grad_(True)
        with torch.no_grad():
            z = torch.randn(fake_w.shape[0], self.generator.style_dim,
                            generator=self.rng).to(self.device)
            real_w = self.generator.mapping(z)
        loss = discriminator_loss(D(real_w), D(fake_w))
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        out = {"disc": float(loss.detach())}
        if cycle.r1 and step % cycle.r1_every == 0:
            r1 = r1_penalty(D, real_w)
            self.disc_optimizer.zero_grad(set_to_none=True)
            (cycle.r1 / 2 * r1 * cycle.r1_every).backward()
            self.disc_optimizer.step()
            out["r1"] = float(r1.detach())
        D.requires_grad_(False)
        return out

    @torch.no_grad()
    def _enable_new_deltas(self, step: int) -> None:
        """At the step delta i is enabled, start it from zero (styles[i] := styles[0])."""
        schedule = self.cycle.schedule
        for i in range(1, schedule.n_latent):
            if schedule.enable_step(i) == step and step < schedule.removal_step(i):
                self.encoder.styles[i].weight.copy_(self.encoder.styles[0].weight)
                self.encoder.styles[i].bias.copy_(self.encoder.styles[0].bias)
                self.encoder.latent_avg[i].copy_(self.encoder.latent_avg[0])

    # --- the loop ------------------------------------------------------------------------

    def train(self, steps: int) -> list[dict[str, float]]:
        """Run ``steps`` more steps; returns each step's record (losses, lr, ramp, …).

        Logs progress every ``log_every`` steps (and appends to ``log.jsonl``), checkpoints
        every ``checkpoint_every`` steps and at the end (when ``out_dir`` is set). Ctrl-C
        finishes the current step, saves a checkpoint and raises KeyboardInterrupt.
        """
        records: list[dict[str, float]] = []
        if steps <= 0:
            return records
        end = self.step + steps
        started = time.monotonic()
        first = self.step
        log.info("training the encoder from step %d to %d (batch %d%s)", self.step, end,
                 self.config.batch_size, ", half real" if self.real_images is not None else
                 ", synthetic only")
        with deferred_interrupt() as interrupted:
            while self.step < end:
                record = self.training_step()
                record["step"] = self.step
                records.append(record)
                done = self.step - first
                if self.step % self.config.log_every == 0 or self.step == end:
                    elapsed = time.monotonic() - started
                    rate = done / elapsed if elapsed > 0 else float("inf")
                    self._log(record, rate, (end - self.step) / rate if rate > 0 else 0.0)
                if self.out_dir is not None and (self.step % self.config.checkpoint_every == 0
                                                 or self.step == end):
                    self.save_checkpoint()
                if interrupted[0]:
                    if self.out_dir is not None and self.step % self.config.checkpoint_every:
                        self.save_checkpoint()
                    log.info("interrupted at step %d%s", self.step,
                             f"; checkpoint saved in {self.out_dir}, continue with --resume"
                             if self.out_dir is not None else "")
                    raise KeyboardInterrupt
        return records

    def _log(self, record: dict[str, float], rate: float, eta: float) -> None:
        shown = "  ".join(f"{key} {value:.4g}" for key, value in record.items()
                          if key not in ("step", "lr", "feature_scale"))
        log.info("step %d  %s  (%.2f it/s, ETA %s)", self.step, shown, rate, _format_eta(eta))
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            entry = dict(record, time=time.time(), it_per_s=rate)
            with (self.out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    # --- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, out_dir: str | Path | None = None) -> Path:
        """Write the training state, then the encoder (both atomically); returns the folder.

        In cycle mode the saved encoder has its inactive layers tied to layer 0, so its plain
        ``forward`` gives the masked codes; the training state keeps the raw weights.
        """
        folder = Path(out_dir) if out_dir is not None else self.out_dir
        if folder is None:
            raise ValueError("no out_dir to save the checkpoint in")
        folder.mkdir(parents=True, exist_ok=True)
        content: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "step": self.step,
            "config": self.config.to_dict(),
            "encoder_config": self.encoder.config,
            "generator_config": self.generator.config,
            "encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
        }
        if self.discriminator is not None:
            content["discriminator"] = self.discriminator.state_dict()
            content["disc_optimizer"] = self.disc_optimizer.state_dict()
        save_state(folder / TRAINING_STATE_FILE, content)
        encoder = self.encoder
        state = self.cycle_state()  # the mask the next step would use
        if state is not None:
            encoder = FeatureStyleEncoder(**self.encoder.config)
            encoder.load_state_dict(self.encoder.state_dict())
            tie_inactive_styles(encoder, state.active)
        save_encoder(encoder, folder / ENCODER_FILE)
        log.debug("checkpoint at step %d written to %s", self.step, folder)
        return folder

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore step, encoder, optimiser, RNG (and discriminator) from a training state file
        or the folder holding one; returns the step."""
        path = Path(path)
        if path.is_dir():
            path = path / TRAINING_STATE_FILE
        content = load_state(path)
        if content.get("format") != _STATE_FORMAT:
            raise CheckpointError(f"{path}: training-state format {content.get('format')!r} is "
                                  f"not {_STATE_FORMAT}")
        if content["encoder_config"] != self.encoder.config:
            raise CheckpointError(f"{path}: was trained with another encoder "
                                  f"({content['encoder_config']}); resume with that encoder")
        if content["generator_config"] != self.generator.config:
            raise CheckpointError(f"{path}: was trained against another generator "
                                  f"({content['generator_config']}); pass that generator")
        if (self.discriminator is None) != ("discriminator" not in content):
            raise CheckpointError(f"{path}: the latent discriminator is "
                                  f"{'absent' if 'discriminator' not in content else 'present'}"
                                  " there; resume with the same --cycle settings")
        self.encoder.load_state_dict(content["encoder"])
        self.optimizer.load_state_dict(content["optimizer"])
        self.rng.set_state(content["rng"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(content["discriminator"])
            self.disc_optimizer.load_state_dict(content["disc_optimizer"])
        self.step = int(content["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return self.step

    @classmethod
    def resume(cls, generator: StyleGAN2Generator, out_dir: str | Path, *,
               perceptual: ImageLoss | None = None, identity: nn.Module | None = None,
               real_images: ImageSource | None = None,
               config_overrides: dict[str, Any] | None = None) -> EncoderTrainer:
        """A trainer rebuilt from ``out_dir``'s training state (encoder shape and config come
        from the file; ``config_overrides`` may change e.g. ``log_every``)."""
        out_dir = Path(out_dir)
        content = load_state(out_dir / TRAINING_STATE_FILE)
        try:
            config = EncoderTrainingConfig.from_dict(content["config"])
            encoder = FeatureStyleEncoder(**content["encoder_config"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{out_dir / TRAINING_STATE_FILE}: bad stored config ({error})"
                                  ) from None
        if config_overrides:
            config = replace(config, **config_overrides)
        trainer = cls(generator, encoder, config, perceptual=perceptual, identity=identity,
                      real_images=real_images, out_dir=out_dir)
        trainer.load_checkpoint(out_dir / TRAINING_STATE_FILE)
        return trainer


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def check_out_dir(out_dir: str | Path, resume: bool) -> None:
    """Refuse to start a fresh run over an existing one (and to resume from nothing)."""
    state = Path(out_dir) / TRAINING_STATE_FILE
    if resume and not state.is_file():
        raise VidinvError(f"{state}: no training state to resume; drop --resume to start")
    if not resume and state.exists():
        raise VidinvError(f"{out_dir}: holds a training run; pass --resume to continue it or "
                          "choose another --out")
