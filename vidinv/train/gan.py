"""Train a (small) StyleGAN2 generator from scratch: D, losses, EMA, checkpoints, resume.

This is the StyleGAN2 recipe (Karras et al. 2020; rosinality/stylegan2-pytorch ``train.py`` and
NVIDIA's ``training/loss.py``) in plain PyTorch, sized so that a 64 px model of one person can be
trained on a CPU from a few hundred aligned face crops:

* non-saturating logistic loss; lazy R1 on the reals every ``r1_every`` steps (weight
  ``r1_gamma / 2 · r1_every``, Adam's lr and betas scaled by ``r1_every / (r1_every + 1)``);
* path-length regularisation is implemented but off by default (``pl_weight = 0``): at this
  size it costs a double backward through G for little benefit;
* style mixing (one cut-off layer per batch, probability ``style_mixing``);
* per-sample random noise while training (the generator's constant noise buffers are swapped
  for fresh draws around each forward and put back; the saved generator keeps its buffers);
* an exponential moving average of G with a half-life of ``ema_kimg`` thousand images and
  NVIDIA's ramp-up (half-life ≤ ``ema_rampup`` × images seen);
* DiffAugment (:mod:`vidinv.train.augment`) on reals and fakes before D, and horizontal
  mirroring of the reals.

Every random number comes from one CPU ``torch.Generator``; a checkpoint stores its state with
G, D, G_ema and both optimisers, so a resumed run takes exactly the steps the uninterrupted run
would have taken (on the same device and thread count).

A run folder holds ``generator.safetensors`` (the EMA generator, native format, with
``latent_avg``), ``training_state.safetensors`` (everything needed to resume), ``log.jsonl``
(one record per ``log_every`` steps: losses averaged over the window, images/s), ``reals.png``
and ``samples/NNNNNN.png`` (G_ema on fixed z every ``sample_every`` steps).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidinv.errors import CheckpointError, InputFileError, VidinvError
from vidinv.models.discriminator import Discriminator
from vidinv.models.folder import GENERATOR_FILE, TRAINING_STATE_FILE
from vidinv.models.generator_io import save_generator
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.train.augment import DiffAugment, parse_policy
from vidinv.train.state import deferred_interrupt, load_state, save_state

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"
REALS_FILE = "reals.png"
_STATE_FORMAT = 1

#: Fields that fix the shapes of G and D; a checkpoint only resumes with the same values.
ARCHITECTURE_FIELDS = ("resolution", "channel_multiplier", "channel_max", "n_mlp", "style_dim",
                       "lr_mlp", "mbstd_group")


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GanTrainConfig:
    """Everything that defines a generator training run (stored in its checkpoints).

    Defaults are for a 64 px model of one person trained on a CPU from ~100–300 aligned crops:
    channels [128, 128, 128, 64, 32] at 4…64 px (``channel_multiplier`` 0.125, ``channel_max``
    128; see :func:`layer_channels`) train about as fast as a flat 64-channel model and 2.5× as
    fast as a flat 128-channel one (``channel_multiplier`` 2), with the width where a face's
    shape is decided.
    """

    resolution: int = 64
    channel_multiplier: float = 0.125
    channel_max: int = 128
    n_mlp: int = 4
    style_dim: int = 512
    lr_mlp: float = 0.01
    mbstd_group: int = 4
    #: Images per step (reals; as many fakes for D and for G).
    batch: int = 8
    #: Adam lr of G and D before the lazy-regularisation scaling; betas (0, 0.99).
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    #: R1 weight γ (penalty γ/2 · E‖∇D(x)‖²) and its lazy interval; 0 turns R1 off.
    r1_gamma: float = 1.0
    r1_every: int = 16
    #: Path-length regularisation (off by default); applied every ``pl_every`` steps on
    #: batch // ``pl_batch_shrink`` images.
    pl_weight: float = 0.0
    pl_every: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    #: EMA half-life in thousands of images, and its ramp-up (≤ rampup × images seen); None: off.
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    augment: str = "color,translation,cutout"
    mirror: bool = True
    #: Fresh per-sample noise in every training forward (StyleGAN2); False: the constant buffers.
    random_noise: bool = True
    seed: int = 0
    #: Steps the run is meant to last (``train()`` without an argument runs up to it).
    total_steps: int = 10_000
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    n_samples: int = 16

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        if self.batch < 2:
            raise ValueError("batch must be ≥ 2 (minibatch standard deviation)")
        for name in ("r1_every", "pl_every", "pl_batch_shrink", "checkpoint_every",
                     "sample_every", "log_every", "n_samples", "n_mlp", "style_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.style_mixing <= 1.0:
            raise ValueError(f"style_mixing must be in [0, 1], got {self.style_mixing}")
        for name in ("lr", "r1_gamma", "pl_weight", "pl_decay", "ema_kimg", "beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < float("inf"):  # NaN fails too
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
        if not 0.0 < self.lr:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.ema_rampup is not None and not 0.0 <= self.ema_rampup < float("inf"):
            raise ValueError(f"ema_rampup must be a finite number ≥ 0, got {self.ema_rampup}")
        parse_policy(self.augment)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanTrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**data)


def ema_beta(images_seen: int, batch: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Decay of G_ema for a step after ``images_seen`` images (NVIDIA's formula).

    beta = 0.5 ** (batch / half_life), half_life = min(1000·ema_kimg, ema_rampup·images_seen).
    """
    half_life = ema_kimg * 1000.0
    if ema_rampup is not None:
        half_life = min(half_life, images_seen * ema_rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


# --- data ------------------------------------------------------------------------------------


def load_image_folder(folder: str | Path, resolution: int) -> torch.Tensor:
    """Read every image of ``folder`` (natural order) as [N,3,R,R] uint8 RGB.

    Images must be square (aligned face crops); larger ones are shrunk with area averaging,
    smaller ones enlarged with bicubic interpolation.
    """
    import cv2

    from vidinv.video.errors import VideoInputError
    from vidinv.video.images import ImageSequenceReader, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: not a folder; pass a folder of aligned face images")
    try:
        paths = ImageSequenceReader(folder).paths
        images = []
        for path in paths:
            image = read_image(path)
            if image.shape[0] != image.shape[1]:
                raise InputFileError(f"{path}: {image.shape[1]}×{image.shape[0]} is not square; "
                                     "pass aligned face crops")
            if image.shape[0] != resolution:
                shrink = image.shape[0] > resolution
                image = cv2.resize(image, (resolution, resolution),
                                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
            images.append(image)
    except VideoInputError as error:
        raise InputFileError(str(error)) from None
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def image_grid(images: torch.Tensor, columns: int | None = None) -> np.ndarray:
    """[N,3,R,R] float in [-1,1] (or uint8) -> one [rows·R, columns·R, 3] uint8 picture."""
    if images.dtype != torch.uint8:
        images = ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
        images = images.to(torch.uint8)
    count, _, size, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.zeros(rows * columns, 3, size, size, dtype=torch.uint8)
    grid[:count] = images.cpu()
    grid = grid.reshape(rows, columns, 3, size, size).permute(0, 3, 1, 4, 2)
    return grid.reshape(rows * size, columns * size, 3).numpy()


# --- Ctrl-C ----------------------------------------------------------------------------------




# --- the trainer -----------------------------------------------------------------------------


class GanTrainer:
    """Trains G and D on ``images`` (see the module docstring).

    Args:
        config: :class:`GanTrainConfig`.
        images: [N,3,R,R] uint8 RGB tensor (R = ``config.resolution``) or a folder of aligned
            face crops (:func:`load_image_folder`).
        out_dir: run folder for checkpoints, samples and ``log.jsonl``; None writes nothing.
        device: where G and D live; all random numbers are drawn on the CPU.

    G and D are initialised from ``config.seed`` (the global RNG is left as it was).
    """

    def __init__(self, config: GanTrainConfig, images: torch.Tensor | str | Path,
                 out_dir: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if isinstance(images, (str, Path)):
            images = load_image_folder(images, config.resolution)
        if (images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3
                or tuple(images.shape[2:]) != (config.resolution, config.resolution)):
            raise ValueError(f"images must be [N,3,{config.resolution},{config.resolution}] "
                             f"uint8, got {tuple(images.shape)} {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError("no training images")
        self.images = images.to(self.device)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.G = StyleGAN2Generator(config.resolution, config.style_dim, config.n_mlp,
                                        config.channel_multiplier, config.channel_max,
                                        conv_clamp=None, lr_mlp=config.lr_mlp)
            self.D = Discriminator(config.resolution, config.channel_multiplier,
                                   config.channel_max, mbstd_group=config.mbstd_group)
        # On the CPU, oneDNN runs the blur, transposed and 3×3 convolutions several times
        # faster on channels-last tensors; the parameters keep that layout for the whole run.
        self.memory_format = (torch.channels_last if self.device.type == "cpu"
                              else torch.contiguous_format)
        self.G.to(self.device, memory_format=self.memory_format).train()
        self.D.to(self.device, memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)

        self.g_optim = torch.optim.Adam(self.G.parameters(), lr=config.lr,
                                        betas=(config.beta1, config.beta2), eps=1e-8)
        self.d_optim = torch.optim.Adam(self.D.parameters(), lr=config.lr,
                                        betas=(config.beta1, config.beta2), eps=1e-8)
        self._set_optimizer_hyperparameters()
        self.augment = DiffAugment(config.augment)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.pl_mean = torch.zeros((), device=self.device)
        self.last_r1 = float("nan")
        self.last_pl = float("nan")
        self.sample_z = torch.randn(config.n_samples, config.style_dim,
                                    generator=torch.Generator().manual_seed(config.seed + 1))

    # --- pieces of a step ----------------------------------------------------------------

    def _set_optimizer_hyperparameters(self) -> None:
        """Lazy regularisation: lr · c and betas ** c with c = interval / (interval + 1)."""
        config = self.config
        for optim, interval, active in ((self.g_optim, config.pl_every, config.pl_weight > 0),
                                        (self.d_optim, config.r1_every, config.r1_gamma > 0)):
            ratio = interval / (interval + 1) if active else 1.0
            for group in optim.param_groups:
                group["lr"] = config.lr * ratio
                group["betas"] = (config.beta1**ratio, config.beta2**ratio)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of G and D (e.g. lower for fine-tuning a trained G)."""
        self.config = replace(self.config, lr=float(lr))
        self._set_optimizer_hyperparameters()

    def real_batch(self, batch: int) -> torch.Tensor:
        """[batch,3,R,R] float in [-1,1]: random reals (with replacement), half mirrored."""
        index = torch.randint(self.images.shape[0], (batch,), generator=self.rng)
        flip = torch.rand(batch, generator=self.rng) < 0.5
        images = self.images[index.to(self.device)].float() / 127.5 - 1.0
        if self.config.mirror:
            images = torch.where(flip.to(self.device)[:, None, None, None],
                                 images.flip(3), images)
        return images.contiguous(memory_format=self.memory_format)

    def mapped_ws(self, generator: StyleGAN2Generator, batch: int) -> torch.Tensor:
        """W+ codes [batch,n_latent,style_dim] from random z, with style mixing.

        With probability ``style_mixing`` the layers from a random cut-off in [1, n_latent) on
        take a second code. The same random numbers are drawn either way.
        """
        config = self.config
        z = torch.randn(2 * batch, config.style_dim, generator=self.rng).to(self.device)
        mix = torch.rand((), generator=self.rng).item() < config.style_mixing
        n_latent = generator.n_latent
        cutoff = int(torch.randint(1, n_latent, (), generator=self.rng))
        w = generator.mapping(z).reshape(2, batch, -1)
        if not mix:
            return w[0][:, None].expand(-1, n_latent, -1)
        first = (torch.arange(n_latent, device=self.device) < cutoff)[None, :, None]
        return torch.where(first, w[0][:, None], w[1][:, None])

    def synthesise(self, generator: StyleGAN2Generator, ws: torch.Tensor) -> torch.Tensor:
        """generator.synthesis(ws) with fresh per-sample noise when ``random_noise``."""
        if not self.config.random_noise:
            return generator.synthesis(ws)
        layers = list(generator.synthesis.layers)
        kept = [layer.noise for layer in layers]
        try:
            for layer in layers:
                side = layer.noise.shape[-1]
                noise = torch.randn(ws.shape[0], 1, side, side, generator=self.rng)
                layer.noise = noise.to(device=self.device, dtype=kept[0].dtype)
            return generator.synthesis(ws)
        finally:
            for layer, noise in zip(layers, kept, strict=True):
                layer.noise = noise

    def training_step(self) -> dict[str, float]:
        """One D step (+ lazy R1), one G step (+ lazy path length), the EMA update."""
        config = self.config
        batch = config.batch
        step = self.step
        started = time.perf_counter()
        record: dict[str, float] = {}

        # D: logistic loss on augmented reals and fakes.
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        real = self.real_batch(batch)
        with torch.no_grad():
            fake = self.synthesise(self.G, self.mapped_ws(self.G, batch))
        fake_logits = self.D(self.augment(fake, self.rng))
        real_logits = self.D(self.augment(real, self.rng))
        d_real = F.softplus(-real_logits).mean()
        d_fake = F.softplus(fake_logits).mean()
        self.d_optim.zero_grad(set_to_none=True)
        (d_real + d_fake).backward()
        self.d_optim.step()
        record.update(d_loss=_item(d_real + d_fake), d_real=_item(d_real), d_fake=_item(d_fake),
                      real_logit=_item(real_logits.mean()), fake_logit=_item(fake_logits.mean()))

        # Lazy R1 on the (augmented) reals, gradient taken with respect to the reals.
        if config.r1_gamma > 0 and step % config.r1_every == 0:
            real_r1 = real.detach().requires_grad_(True)
            logits = self.D(self.augment(real_r1, self.rng))
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean()
            self.d_optim.zero_grad(set_to_none=True)
            (penalty * (config.r1_gamma / 2 * config.r1_every)).backward()
            self.d_optim.step()
            self.last_r1 = _item(penalty)
        record["r1"] = self.last_r1

        # G: non-saturating loss through the augmentation; D's weights take no gradient.
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        fake = self.synthesise(self.G, self.mapped_ws(self.G, batch))
        g_loss = F.softplus(-self.D(self.augment(fake, self.rng))).mean()
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        record["g_loss"] = _item(g_loss)

        if config.pl_weight > 0 and step % config.pl_every == 0:
            self._path_length_step(max(1, batch // config.pl_batch_shrink))
        record["pl"] = self.last_pl
        self.D.requires_grad_(True)

        beta = ema_beta(step * batch, batch, config.ema_kimg, config.ema_rampup)
        with torch.no_grad():
            for ema, param in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                ema.lerp_(param, 1.0 - beta)
        self.step += 1
        elapsed = time.perf_counter() - started
        record.update(ema_beta=beta, kimg=self.step * batch / 1000.0, sec_per_step=elapsed,
                      images_per_s=batch / elapsed if elapsed > 0 else float("inf"))
        return record

    def _path_length_step(self, batch: int) -> None:
        """NVIDIA's path-length penalty: ‖J_wᵀ y‖ close to its running mean."""
        config = self.config
        ws = self.mapped_ws(self.G, batch)
        images = self.synthesise(self.G, ws)
        side = images.shape[-1]
        noise = torch.randn(images.shape, generator=self.rng).to(self.device) / side
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        mean = self.pl_mean.lerp(lengths.mean(), config.pl_decay)
        self.pl_mean.copy_(mean.detach())
        penalty = (lengths - mean).square().mean()
        self.g_optim.zero_grad(set_to_none=True)
        (penalty * config.pl_weight * config.pl_every).backward()
        self.g_optim.step()
        self.last_pl = _item(penalty)

    # --- the loop ------------------------------------------------------------------------

    def train(self, steps: int | None = None, progress: bool = False) -> list[dict[str, float]]:
        """Run ``steps`` more steps (default: up to ``config.total_steps``); returns each step's
        record (losses, ``ema_beta``, ``kimg``, ``images_per_s``).

        Appends window averages to ``log.jsonl`` every ``log_every`` steps, writes sample grids
        every ``sample_every`` steps and checkpoints every ``checkpoint_every`` steps and at the
        end (when ``out_dir`` is set). Ctrl-C finishes the current step, saves a checkpoint and
        raises KeyboardInterrupt.
        """
        config = self.config
        if steps is None:
            steps = config.total_steps - self.step
        records: list[dict[str, float]] = []
        if steps <= 0:
            return records
        end = self.step + steps
        if self.out_dir is not None and self.step == 0:
            self._write_grid(self.out_dir / REALS_FILE, self.images[:config.n_samples])
            self.write_samples()
        log.info("training a %d px generator from step %d to %d on %d images (batch %d, "
                 "augment %s)", config.resolution, self.step, end, self.images.shape[0],
                 config.batch, config.augment or "none")
        window: list[dict[str, float]] = []
        window_started = time.monotonic()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.step, unit="step", dynamic_ncols=True,
                       smoothing=0.05)
        try:
            with deferred_interrupt() as interrupted:
                while self.step < end:
                    record = self.training_step()
                    record["step"] = self.step
                    records.append(record)
                    window.append(record)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}",
                                        r1=f"{record['r1']:.3g}",
                                        img_s=f"{record['images_per_s']:.1f}", refresh=False)
                    if self.step % config.log_every == 0 or self.step == end:
                        now = time.monotonic()
                        self._log(window, now - window_started, quiet=bar is not None)
                        window, window_started = [], now
                    if self.out_dir is not None:
                        if self.step % config.sample_every == 0:
                            self.write_samples()
                        if self.step % config.checkpoint_every == 0 or self.step == end:
                            self.save_checkpoint()
                    if interrupted[0]:
                        if self.out_dir is not None and self.step % config.checkpoint_every:
                            self.save_checkpoint()
                        log.info("interrupted at step %d%s", self.step,
                                 f"; checkpoint saved in {self.out_dir}, continue with --resume"
                                 if self.out_dir is not None else "")
                        raise KeyboardInterrupt
        finally:
            if bar is not None:
                bar.close()
        return records

    def _log(self, window: list[dict[str, float]], seconds: float, quiet: bool) -> None:
        if not window:
            return
        last = window[-1]
        entry: dict[str, float] = {"step": self.step, "kimg": last["kimg"]}
        for key in ("d_loss", "d_real", "d_fake", "real_logit", "fake_logit", "g_loss"):
            entry[key] = float(np.mean([record[key] for record in window]))
        entry.update(r1=last["r1"], pl=last["pl"], ema_beta=last["ema_beta"])
        images = len(window) * self.config.batch
        entry["images_per_s"] = images / seconds if seconds > 0 else float("inf")
        entry["time"] = time.time()
        if not quiet:
            log.info("step %d  d %.4f (real %.3f fake %.3f)  g %.4f  r1 %.4g  %.1f img/s",
                     self.step, entry["d_loss"], entry["d_real"], entry["d_fake"],
                     entry["g_loss"], entry["r1"], entry["images_per_s"])
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with (self.out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({key: _json_number(value) for key, value in entry.items()})
                             + "\n")

    # --- samples -------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """G_ema on ``z`` (default: the fixed sample z) -> [N,3,R,R] float in about [-1,1]."""
        z = self.sample_z if z is None else z
        return self.G_ema(z.to(self.device)).clamp(-1, 1)

    def write_samples(self) -> Path:
        """Write ``samples/<step>.png``: G_ema on the fixed z (constant noise)."""
        if self.out_dir is None:
            raise ValueError("no out_dir to write samples in")
        path = self.out_dir / SAMPLES_DIR / f"{self.step:06d}.png"
        self._write_grid(path, self.sample())
        return path

    @staticmethod
    def _write_grid(path: Path, images: torch.Tensor) -> None:
        from vidinv.video.images import write_image

        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, image_grid(images))

    # --- checkpoints ---------------------------------------------------------------------

    def export_generator(self) -> StyleGAN2Generator:
        """A copy of G_ema (eval, CPU) with ``latent_avg`` from :meth:`compute_latent_avg`."""
        generator = copy.deepcopy(self.G_ema).cpu().eval()
        generator.latent_avg.copy_(generator.compute_latent_avg())
        return generator

    def save_checkpoint(self, out_dir: str | Path | None = None) -> Path:
        """Write the training state, then the EMA generator (both atomically); returns the
        folder."""
        folder = Path(out_dir) if out_dir is not None else self.out_dir
        if folder is None:
            raise ValueError("no out_dir to save the checkpoint in")
        folder.mkdir(parents=True, exist_ok=True)
        content: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "step": self.step,
            "config": self.config.to_dict(),
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "generator_ema": self.G_ema.state_dict(),
            "generator_optimizer": self.g_optim.state_dict(),
            "discriminator_optimizer": self.d_optim.state_dict(),
            "rng": self.rng.get_state(),
            "pl_mean": self.pl_mean,
            "last_r1": _json_number(self.last_r1),
            "last_pl": _json_number(self.last_pl),
        }
        save_state(folder / TRAINING_STATE_FILE, content)
        save_generator(self.export_generator(), folder / GENERATOR_FILE)
        log.debug("checkpoint at step %d written to %s", self.step, folder)
        return folder

    def resume(self, path: str | Path) -> int:
        """Restore step, G, D, G_ema, optimisers, RNG from a training state file (or the folder
        holding one); returns the step. The architecture must match this trainer's config;
        other settings (lr, γ, …) are this trainer's."""
        path = Path(path)
        if path.is_dir():
            path = path / TRAINING_STATE_FILE
        content = load_state(path)
        if content.get("format") != _STATE_FORMAT:
            raise CheckpointError(f"{path}: training-state format {content.get('format')!r} is "
                                  f"not {_STATE_FORMAT}; it was not written by this trainer")
        stored = content.get("config", {})
        for name in ARCHITECTURE_FIELDS:
            if stored.get(name) != getattr(self.config, name):
                raise CheckpointError(f"{path}: trained with {name}={stored.get(name)!r}, not "
                                      f"{getattr(self.config, name)!r}; resume with the same "
                                      "architecture")
        try:
            self.G.load_state_dict(content["generator"])
            self.D.load_state_dict(content["discriminator"])
            self.G_ema.load_state_dict(content["generator_ema"])
            self.g_optim.load_state_dict(content["generator_optimizer"])
            self.d_optim.load_state_dict(content["discriminator_optimizer"])
            self.rng.set_state(content["rng"])
            self.pl_mean.copy_(content["pl_mean"])
        except (KeyError, RuntimeError, ValueError) as error:
            message = str(error).splitlines()[0][:200]
            raise CheckpointError(f"{path}: damaged or foreign training state ({message})"
                                  ) from None
        self._set_optimizer_hyperparameters()
        self.last_r1 = _float_or_nan(content.get("last_r1"))
        self.last_pl = _float_or_nan(content.get("last_pl"))
        self.step = int(content["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return self.step

    @classmethod
    def from_checkpoint(cls, path: str | Path, images: torch.Tensor | str | Path,
                        out_dir: str | Path | None = None, device: str | torch.device = "cpu",
                        overrides: dict[str, Any] | None = None) -> GanTrainer:
        """A trainer rebuilt from a training state (its stored config, changed by
        ``overrides``, e.g. ``total_steps``), resumed. ``out_dir`` defaults to the state's
        folder."""
        path = Path(path)
        state = path / TRAINING_STATE_FILE if path.is_dir() else path
        content = load_state(state)
        try:
            config = GanTrainConfig.from_dict(content["config"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{state}: bad stored config ({error})") from None
        if overrides:
            try:
                config = replace(config, **overrides)
            except (TypeError, ValueError) as error:
                raise VidinvError(f"cannot resume with {overrides}: {error}") from None
        trainer = cls(config, images, out_dir=state.parent if out_dir is None else out_dir,
                      device=device)
        trainer.resume(state)
        return trainer


def _item(value: torch.Tensor) -> float:
    return float(value.detach())


def _json_number(value: Any) -> Any:
    """NaN/inf as None, so log lines and stored states are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def check_run_dir(out_dir: str | Path, resume: bool) -> None:
    """Refuse to start a fresh run over an existing one, and to resume from nothing."""
    state = Path(out_dir) / TRAINING_STATE_FILE
    if resume and not state.is_file():
        raise VidinvError(f"{state}: no training state to resume; drop --resume to start")
    if not resume and state.exists():
        raise VidinvError(f"{out_dir}: holds a generator training run; pass --resume to continue "
                          "it or choose another --out")
