"""``vidinv train generator``: train a small StyleGAN2 generator from a folder of aligned faces.

:func:`add_gan_parser` adds the sub-command to the ``vidinv train`` action parsers. Nothing heavy
is imported here; the handler imports torch. Ctrl-C finishes the current step, writes a
checkpoint and exits with 130 (continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vidinv.errors import VidinvError

log = logging.getLogger(__name__)

#: Options that shape G and D; on --resume they come from the checkpoint and must not differ.
_ARCHITECTURE_OPTIONS = {
    "resolution": "resolution",
    "channel_max": "channel_max",
    "channel_multiplier": "channel_multiplier",
    "n_mlp": "n_mlp",
    "style_dim": "style_dim",
}
#: Options that may change on --resume (GanTrainConfig field names).
_TRAINING_OPTIONS = ("batch", "lr", "r1_gamma", "r1_every", "pl_weight", "style_mixing",
                     "ema_kimg", "ema_rampup", "augment", "seed", "checkpoint_every",
                     "sample_every", "log_every")


def add_gan_parser(train_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``generator`` to the ``vidinv train`` action parsers; returns its parser."""
    gen = train_subparsers.add_parser(
        "generator", help="train a small StyleGAN2 generator from aligned face images",
        description="Train a StyleGAN2 generator (non-saturating loss, lazy R1, style mixing, "
        "EMA, DiffAugment, mirrored reals) from a folder of aligned face crops. The run folder "
        "gets generator.safetensors (the EMA generator), training_state.safetensors, log.jsonl, "
        "reals.png and samples/. Defaults (in brackets) are for a 64 px model on a CPU.")
    gen.add_argument("--data", required=True, help="folder of square aligned face images")
    gen.add_argument("--out", required=True, help="run folder")
    gen.add_argument("--resume", action="store_true", help="continue the run in --out")
    gen.add_argument("--steps", type=int,
                     help="total steps; a resumed run continues up to this [10000]")
    arch = gen.add_argument_group("architecture (fixed by the checkpoint on --resume)")
    arch.add_argument("--resolution", type=int, help="image side, a power of two [64]")
    arch.add_argument("--channel-max", type=int, help="most channels of any layer [128]")
    arch.add_argument("--channel-multiplier", type=float,
                      help="channels at R px = min(16384·m / R, channel-max); 0.125 with "
                      "channel-max 128 gives 128,128,128,64,32 at 4…64 px, 2 gives a flat "
                      "channel-max [0.125]")
    arch.add_argument("--n-mlp", type=int, help="mapping-network layers [4]")
    arch.add_argument("--style-dim", type=int,
                      help="z/w size [512; the encoders and directions assume 512]")
    train = gen.add_argument_group("training")
    train.add_argument("--batch", type=int, help="images per step [8]")
    train.add_argument("--lr", type=float, help="Adam lr of G and D [0.002]")
    train.add_argument("--r1-gamma", type=float, help="R1 weight γ; 0 = off [1]")
    train.add_argument("--r1-every", type=int, help="lazy R1 interval in steps [16]")
    train.add_argument("--pl-weight", type=float,
                       help="path-length regularisation weight; 0 = off [0]")
    train.add_argument("--style-mixing", type=float, help="style-mixing probability [0.9]")
    train.add_argument("--ema-kimg", type=float,
                       help="G_ema half-life in thousands of images [10]")
    train.add_argument("--ema-rampup", type=float,
                       help="half-life ≤ this × images seen; 0 = no ramp-up [0.05]")
    train.add_argument("--augment", help="DiffAugment policy, comma-separated from color, "
                       "translation, cutout; 'none' = off [color,translation,cutout]")
    train.add_argument("--no-mirror", action="store_true",
                       help="do not flip the reals horizontally")
    train.add_argument("--seed", type=int, help="initialisation and sampling seed [0]")
    out = gen.add_argument_group("output and machine")
    out.add_argument("--checkpoint-every", type=int, help="steps between checkpoints [1000]")
    out.add_argument("--sample-every", type=int, help="steps between sample grids [500]")
    out.add_argument("--log-every", type=int, help="steps between log.jsonl records [10]")
    out.add_argument("--threads", type=int, default=2,
                     help="torch CPU threads (default 2)")
    out.add_argument("--device", help="cpu or cuda (default: cpu)")
    out.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    gen.set_defaults(handler=_train_generator, io_reads=("--data",), io_folders=("--out",))
    return gen


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """GanTrainConfig fields set on the command line."""
    values: dict[str, Any] = {}
    for option, field in _ARCHITECTURE_OPTIONS.items():
        if getattr(args, option) is not None:
            values[field] = getattr(args, option)
    for field in _TRAINING_OPTIONS:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    if "ema_rampup" in values and values["ema_rampup"] <= 0:
        values["ema_rampup"] = None
    if args.no_mirror:
        values["mirror"] = False
    if args.steps is not None:
        values["total_steps"] = args.steps
    return values


def _train_generator(args: argparse.Namespace) -> int:
    import torch

    from vidinv.models.folder import GENERATOR_FILE, TRAINING_STATE_FILE
    from vidinv.train.gan import (
        GanTrainConfig,
        GanTrainer,
        check_run_dir,
        load_image_folder,
    )
    from vidinv.train.state import load_state

    if args.threads < 1:
        raise VidinvError("--threads must be ≥ 1")
    torch.set_num_threads(args.threads)
    device = args.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VidinvError("--device cuda: no CUDA device is available; use --device cpu")
    out = Path(args.out)
    check_run_dir(out, args.resume)
    values = _given(args)
    if args.steps is not None and args.steps < 0:
        raise VidinvError("--steps must be ≥ 0")

    if args.resume:
        stored = load_state(out / TRAINING_STATE_FILE).get("config", {})
        for field in _ARCHITECTURE_OPTIONS.values():
            if field in values and values.pop(field) != stored.get(field):
                raise VidinvError(f"--{field.replace('_', '-')}: the run in {out} was started "
                                  f"with {stored.get(field)!r}; drop the option or use another "
                                  "--out")
        resolution = int(stored.get("resolution", 0))
        images = load_image_folder(args.data, resolution)
        try:
            trainer = GanTrainer.from_checkpoint(out, images, out_dir=out, device=device,
                                                 overrides=values)
        except ValueError as error:
            raise VidinvError(f"bad option: {error}") from None
    else:
        try:
            config = GanTrainConfig(**values)
        except ValueError as error:
            raise VidinvError(f"bad option: {error}") from None
        images = load_image_folder(args.data, config.resolution)
        trainer = GanTrainer(config, images, out_dir=out, device=device)
    config = trainer.config
    log.info("%d images from %s; %d px, channel_max %d, multiplier %g, style_dim %d; "
             "%d threads", images.shape[0], args.data, config.resolution, config.channel_max,
             config.channel_multiplier, config.style_dim, torch.get_num_threads())
    if trainer.step >= config.total_steps:
        log.info("the run in %s is already at step %d of %d; raise --steps to go on", out,
                 trainer.step, config.total_steps)
        return 0
    trainer.train(progress=not args.no_progress)
    log.info("step %d: wrote %s", trainer.step, out / GENERATOR_FILE)
    return 0
