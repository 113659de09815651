"""``vidinv train``: encoder training, pivot refinement and pivotal tuning from the command line.

Nothing heavy is imported here at import time; each handler imports torch and the models it
needs. User errors are :class:`~vidinv.errors.VidinvError` (one line, exit ≠ 0); Ctrl-C during
encoder training saves a checkpoint first, then exits with 130.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vidinv.errors import VidinvError
from vidinv.io_safety import check_paths, replacing
from vidinv.models import FEATURE_INDEX

log = logging.getLogger(__name__)

#: The official encoder backbone (ArcFace iresnet50).
_OFFICIAL_WIDTHS = (64, 128, 256, 512)
_OFFICIAL_BLOCKS = (3, 4, 14, 3)

#: Files each command reads (checked against what it writes, see vidinv.io_safety).
_LPIPS_READS = ("--lpips-vgg", "--lpips-lin")
_IMAGE_READS = ("--generator", "--encoder", "--image", *_LPIPS_READS)


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train {generator,encoder,refine,pti}`` to the ``vidinv`` sub-command parsers."""
    train = subparsers.add_parser(
        "train", help="train an encoder (FSE, cycle encoding), refine pivots, tune a generator")
    actions = train.add_subparsers(dest="train_command", metavar="ACTION", required=True)
    from vidinv.cli.train_gan import add_gan_parser

    add_gan_parser(actions)

    enc = actions.add_parser("encoder", help="train a Feature-Style Encoder for a generator")
    enc.add_argument("--generator", required=True, help="generator checkpoint (frozen)")
    enc.add_argument("--out", required=True, help="run folder: encoder.safetensors, "
                     "training_state.safetensors, log.jsonl")
    enc.add_argument("--real", help="folder of aligned face images (half of each batch); "
                     "without it every image is synthetic")
    enc.add_argument("--steps", type=int, default=120_000,
                     help="total steps (a resumed run continues up to this; default 120000 = "
                     "the paper's 12 × 10k)")
    enc.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    enc.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    enc.add_argument("--lr-decay-step", type=int, default=100_000,
                     help="divide the lr by 10 from this step on (default 100000)")
    enc.add_argument("--feature-ramp-rate", type=float, default=1e-4,
                     help="the feature tensor's blend weight grows by this per step up to 1 "
                     "(default 1e-4: full at step 10000, as the official code)")
    enc.add_argument("--k", type=int, default=FEATURE_INDEX,
                     help=f"generator feature index (default {FEATURE_INDEX})")
    enc.add_argument("--input-size", type=int,
                     help="encoder input side (default: 16 × the feature side when that is at "
                     "most the generator's resolution, else 8 ×)")
    enc.add_argument("--widths", type=int, nargs=4, default=list(_OFFICIAL_WIDTHS),
                     metavar="W", help="backbone stage widths (default 64 128 256 512)")
    enc.add_argument("--blocks", type=int, nargs=4, default=list(_OFFICIAL_BLOCKS),
                     metavar="N", help="blocks per stage (default 3 4 14 3, iresnet50)")
    enc.add_argument("--cycle", action="store_true",
                     help="cycle encoding W → W+ → W (papers 000/001)")
    enc.add_argument("--cycle-scale", type=float, default=1.0,
                     help="multiply the paper's cycle step counts by this (default 1: ~714k "
                     "steps to pure W)")
    enc.add_argument("--no-discriminator", action="store_true",
                     help="cycle encoding without the latent discriminator")
    enc.add_argument("--resume", action="store_true", help="continue the run in --out")
    enc.add_argument("--checkpoint-every", type=int, default=1000)
    enc.add_argument("--log-every", type=int, default=10)
    enc.add_argument("--seed", type=int, default=0)
    _add_device_and_lpips(enc)
    _add_identity_options(enc)
    enc.set_defaults(handler=_train_encoder, io_reads=("--generator", "--real", *_LPIPS_READS,
                                                         "--identity-net"),
                     io_folders=("--out",))

    refine = actions.add_parser("refine", help="refine an encoder's pivot code for one image")
    _add_image_inputs(refine, encoder_required=True)
    refine.add_argument("--out", required=True, help="output .npz (w, w_init, features, history)")
    refine.add_argument("--steps", type=int, default=100)
    refine.add_argument("--lr", type=float, default=0.01)
    refine.add_argument("--distance-weight", type=float, default=0.01,
                        help="λ of ‖w − w₀‖ (default 0.01)")
    refine.add_argument("--radius", type=float, help="hard bound on ‖w − w₀‖")
    refine.add_argument("--space", choices=("auto", "w", "w+"), default="auto",
                        help="optimise one code (w) or one per layer (w+); auto: w when the "
                        "encoder's rows are equal")
    refine.add_argument("--features", action="store_true",
                        help="also optimise the feature tensor F")
    refine.add_argument("--force", action="store_true", help="overwrite --out")
    _add_device_and_lpips(refine)
    refine.set_defaults(handler=_train_refine, io_reads=_IMAGE_READS, io_writes=("--out",),
                        io_create_parents=True)

    pti = actions.add_parser("pti", help="tune a copy of the generator on one image (PTI)")
    _add_image_inputs(pti, encoder_required=False)
    pti.add_argument("--pivot", help=".npz from `vidinv train refine` (default: the encoder's w)")
    pti.add_argument("--out", required=True, help="output generator .safetensors; the pivot "
                     "goes beside it as <name>.pivot.npz")
    pti.add_argument("--steps", type=int, default=350)
    pti.add_argument("--lr", type=float, default=3e-4)
    pti.add_argument("--stop-at", type=float, default=0.06,
                     help="stop when the perceptual term is at most this (PTI: LPIPS 0.06); "
                     "0 = never")
    pti.add_argument("--no-locality", action="store_true",
                     help="without the locality regulariser")
    pti.add_argument("--force", action="store_true", help="overwrite --out")
    _add_device_and_lpips(pti)
    pti.set_defaults(handler=_train_pti, io_reads=(*_IMAGE_READS, "--pivot"),
                     io_writes=("--out",), io_create_parents=True)
    return train


def _add_image_inputs(parser: argparse.ArgumentParser, encoder_required: bool) -> None:
    parser.add_argument("--generator", required=True, help="generator checkpoint")
    parser.add_argument("--encoder", required=encoder_required,
                        help="encoder checkpoint (native or official 143_enc.pth)")
    parser.add_argument("--image", required=True, help="aligned face image (square)")
    parser.add_argument("--k", type=int, default=FEATURE_INDEX,
                        help=f"generator feature index (default {FEATURE_INDEX})")


def _add_identity_options(parser: argparse.ArgumentParser) -> None:
    """The identity loss (paper 003 Eq. 6) around a face-embedding network the user brings."""
    parser.add_argument("--identity-net", metavar="FILE",
                        help="face-embedding network for the identity loss, saved with "
                             "torch.export.save (.pt2; e.g. an ArcFace you exported); none "
                             "ships with vidinv")
    parser.add_argument("--identity-size", type=int, default=112,
                        help="side of the images the identity network takes (default 112)")
    parser.add_argument("--identity-weight", type=float,
                        help="λ of the identity loss (default 0.1, paper 003; on --resume: the "
                             "run's)")


def _identity_loss(args: argparse.Namespace) -> Any:
    """The identity loss of ``--identity-net`` (None without it); one-line errors."""
    from vidinv.train.losses import load_identity_network

    if args.identity_weight is not None and not 0 <= args.identity_weight < float("inf"):
        raise VidinvError("--identity-weight must be a finite number ≥ 0")
    if args.identity_net is None:
        if args.identity_weight:
            raise VidinvError("--identity-weight needs --identity-net FILE (the network)")
        return None
    if args.identity_size < 8:
        raise VidinvError("--identity-size must be at least 8")
    return load_identity_network(args.identity_net, args.identity_size)


def _add_device_and_lpips(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--lpips-vgg", help="torchvision vgg16 state dict for LPIPS")
    parser.add_argument("--lpips-lin", help="LPIPS v0.1 vgg.pth (linear heads)")


# --- helpers ---------------------------------------------------------------------------------


def _device(name: str | None) -> str:
    import torch

    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise VidinvError("--device cuda: no CUDA device is available; use --device cpu")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _encoder_geometry(generator: Any, k: int, input_size: int | None) -> tuple[int, int, int]:
    """(feature_channels, input_size, content_stride) that match the generator at k."""
    try:
        channels, side, _ = generator.synthesis.feature_shape(k)
    except ValueError as error:
        raise VidinvError(f"--k {k}: {error}") from None
    if input_size is None:
        input_size = 16 * side if 16 * side <= generator.resolution else 8 * side
    if input_size not in (8 * side, 16 * side):
        raise VidinvError(f"--input-size {input_size} cannot give the generator's {side}×{side} "
                          f"feature at k={k}; use {8 * side} or {16 * side}")
    return channels, input_size, input_size // (8 * side)


def _perceptual(args: argparse.Namespace, multi_scale: bool) -> Any:
    from vidinv.train.losses import LPIPS, StructureLoss, build_perceptual

    if multi_scale:
        return build_perceptual(args.lpips_vgg, args.lpips_lin)
    if args.lpips_vgg is None and args.lpips_lin is None:
        log.info("perceptual loss: StructureLoss (SSIM + gradient magnitude; a substitute for "
                 "LPIPS, whose weights were not given)")
        return StructureLoss()
    return LPIPS.from_files(args.lpips_vgg, args.lpips_lin)


def _load_image(path: str, resolution: int, device: str) -> tuple[Any, Any]:
    """(the image at its own size, the image at ``resolution``), [1,3,H,W] in [-1,1]."""
    import torch
    import torch.nn.functional as F

    from vidinv.errors import InputFileError
    from vidinv.video.errors import VideoInputError
    from vidinv.video.images import read_image

    try:
        array = read_image(path)
    except VideoInputError as error:
        raise InputFileError(str(error)) from None
    if array.shape[0] != array.shape[1]:
        raise InputFileError(f"{path}: {array.shape[1]}×{array.shape[0]} is not square; pass an "
                             "aligned face crop")
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    image = image.to(device)
    target = image
    if image.shape[-1] != resolution:
        target = F.interpolate(image, size=(resolution, resolution), mode="bilinear",
                               align_corners=False, antialias=image.shape[-1] > resolution)
    return image, target


def _load_models(args: argparse.Namespace, device: str, need_encoder: bool) -> tuple[Any, Any]:
    from vidinv.models.encoder import check_encoder_matches
    from vidinv.models.encoder_io import load_encoder
    from vidinv.models.generator_io import load_generator
    from vidinv.models.native import looks_like_safetensors

    generator = load_generator(args.generator, device=device)
    if not need_encoder:
        return generator, None
    path = Path(args.encoder)
    native = False
    if path.is_file():
        with path.open("rb") as handle:
            native = looks_like_safetensors(handle.read(16))
    encoder = load_encoder(path, latent_avg=None if native else generator.latent_avg.cpu(),
                           device=device)
    try:
        check_encoder_matches(encoder, generator, args.k)
    except ValueError as error:
        raise VidinvError(f"{args.encoder}: {error}") from None
    return generator, encoder


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise VidinvError(f"{path}: exists; pass --force to overwrite it")


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    """np.savez to a temporary file beside ``path``, renamed into place when complete."""
    import numpy as np

    with replacing(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _history_arrays(history: list[dict[str, float]]) -> dict[str, Any]:
    import numpy as np

    keys = sorted({key for record in history for key in record if key != "step"})
    return {f"history_{key}": np.array([record.get(key, np.nan) for record in history],
                                       dtype=np.float64) for key in keys}


# --- handlers --------------------------------------------------------------------------------


def _train_encoder(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from vidinv.models.encoder import FeatureStyleEncoder
    from vidinv.models.folder import ENCODER_FILE
    from vidinv.models.generator_io import load_generator
    from vidinv.train.cycle import CycleConfig, CycleSchedule
    from vidinv.train.encoder import (
        EncoderTrainer,
        EncoderTrainingConfig,
        ImageFolderSource,
        check_out_dir,
    )
    from vidinv.train.losses import LossWeights

    if args.steps < 0 or args.batch < 1:
        raise VidinvError("--steps must be ≥ 0 and --batch ≥ 1")
    out = Path(args.out)
    check_out_dir(out, args.resume)
    perceptual = _perceptual(args, multi_scale=True)  # weight-file errors before heavy work
    identity = _identity_loss(args)
    device = _device(args.device)
    generator = load_generator(args.generator, device=device)
    real = ImageFolderSource(args.real, generator.resolution) if args.real else None
    if real is not None:
        log.info("real images: %d in %s", len(real), args.real)
    if args.resume:
        trainer = EncoderTrainer.resume(
            generator, out, perceptual=perceptual, identity=identity, real_images=real,
            config_overrides={"log_every": args.log_every,
                              "checkpoint_every": args.checkpoint_every})
        if args.identity_weight is not None:
            trainer.config = replace(trainer.config, weights=replace(
                trainer.config.weights, identity=args.identity_weight))
    else:
        channels, input_size, stride = _encoder_geometry(generator, args.k, args.input_size)
        cycle = None
        if args.cycle:
            try:
                schedule = CycleSchedule.paper(generator.n_latent, args.cycle_scale)
            except ValueError as error:
                raise VidinvError(f"--cycle-scale: {error}") from None
            cycle = CycleConfig(schedule=schedule, discriminator=not args.no_discriminator)
            log.info("cycle encoding: deltas enabled from step %d, W+ → W from %d, removal "
                     "from %d, pure W at %d", schedule.progressive_start,
                     schedule.wplus_to_w_start, schedule.removal_start, schedule.end)
        try:
            config = EncoderTrainingConfig(
                batch_size=args.batch, lr=args.lr, lr_decay_step=args.lr_decay_step,
                feature_index=args.k, feature_ramp_rate=args.feature_ramp_rate,
                checkpoint_every=args.checkpoint_every,
                log_every=args.log_every, seed=args.seed, cycle=cycle,
                weights=LossWeights(**({} if args.identity_weight is None
                                       else {"identity": args.identity_weight})))
        except ValueError as error:
            raise VidinvError(str(error)) from None
        torch.manual_seed(args.seed)
        try:
            encoder = FeatureStyleEncoder(
                n_latent=generator.n_latent, style_dim=generator.style_dim,
                input_size=input_size, widths=args.widths, blocks=args.blocks,
                feature_channels=channels, content_stride=stride)
        except ValueError as error:
            raise VidinvError(f"cannot build that encoder: {error}") from None
        trainer = EncoderTrainer(generator, encoder, config, perceptual=perceptual,
                                 identity=identity, real_images=real, out_dir=out)
    remaining = args.steps - trainer.step
    if remaining <= 0:
        print(f"{out} is already at step {trainer.step} (--steps {args.steps}); nothing to do")
        return 0
    trainer.train(remaining)
    print(f"wrote {out / ENCODER_FILE} (step {trainer.step})")
    return 0


def _train_refine(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vidinv.models.encoder import prepare_input
    from vidinv.train.refine import RefineConfig, refine_pivot

    out = Path(args.out)
    _refuse_existing(out, args.force)
    device = _device(args.device)
    generator, encoder = _load_models(args, device, need_encoder=True)
    image, target = _load_image(args.image, generator.resolution, device)
    with torch.no_grad():
        w_init, features_init = encoder(prepare_input(image, encoder.input_size))
    try:
        config = RefineConfig(steps=args.steps, lr=args.lr, distance_weight=args.distance_weight,
                              radius=args.radius, space=args.space,
                              optimise_features=args.features, feature_index=args.k)
    except ValueError as error:
        raise VidinvError(str(error)) from None
    result = refine_pivot(generator, target, w_init, features_init, config,
                          perceptual=_perceptual(args, multi_scale=False))
    arrays = {"w": result.w[0].cpu().numpy().astype(np.float32),
              "w_init": w_init[0].cpu().numpy().astype(np.float32),
              "features_init": features_init[0].cpu().numpy().astype(np.float32)}
    if result.features is not None:
        arrays["features"] = result.features[0].cpu().numpy().astype(np.float32)
    arrays.update(_history_arrays(result.history))
    _save_npz(out, arrays)
    first, last = result.history[0], result.history[-1]
    print(f"mse {first['mse']:.4f} -> {last['mse']:.4f}, ‖w − w0‖ {last['distance']:.3f}; "
          f"wrote {out}")
    return 0


def _train_pti(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vidinv.models.encoder import prepare_input
    from vidinv.train.pti import PTIConfig, save_tuned_generator, tune_generator

    out = Path(args.out)
    _refuse_existing(out, args.force)
    pivot_out = out.with_name(out.stem + ".pivot.npz")
    check_paths([(option, getattr(args, option[2:])) for option in ("--pivot", "--generator",
                                                                     "--encoder", "--image")],
                [("--out", out), ("the pivot output", pivot_out)], create_parents=True)
    if args.pivot is None and args.encoder is None:
        raise VidinvError("pass --encoder (the pivot is its w) or --pivot PIVOT.npz")
    device = _device(args.device)
    generator, encoder = _load_models(args, device, need_encoder=args.pivot is None)
    image, target = _load_image(args.image, generator.resolution, device)
    if args.pivot is not None:
        pivot_path = Path(args.pivot)
        if not pivot_path.is_file():
            raise VidinvError(f"{pivot_path}: no such pivot file; make one with "
                              "`vidinv train refine`")
        from vidinv.models.safe_load import load_npz

        data = load_npz(pivot_path)  # bounded: no zip bomb, no lying .npy header
        if "w" not in data:
            raise VidinvError(f"{pivot_path}: has no 'w' array; not a pivot file")
        if not np.issubdtype(data["w"].dtype, np.floating) or not np.isfinite(data["w"]).all() \
                or np.abs(data["w"]).max(initial=0) > 1e3:
            raise VidinvError(f"{pivot_path}: its codes w are not finite numbers of sane size; "
                              "make the pivot again with `vidinv train refine`")
        w_pivot = torch.from_numpy(data["w"]).float()[None].to(device)
        expected = (1, generator.n_latent, generator.style_dim)
        if tuple(w_pivot.shape) != expected:
            raise VidinvError(f"{pivot_path}: w has shape {tuple(w_pivot.shape[1:])}, the "
                              f"generator needs {expected[1:]}")
    else:
        with torch.no_grad():
            w_pivot, _ = encoder(prepare_input(image, encoder.input_size))
    config = PTIConfig(steps=args.steps, lr=args.lr,
                       stop_threshold=args.stop_at if args.stop_at > 0 else None,
                       locality=not args.no_locality, feature_index=args.k)
    result = tune_generator(generator, w_pivot, target, config,
                            perceptual=_perceptual(args, multi_scale=False))
    save_tuned_generator(result, out)
    _save_npz(pivot_out, {"w": w_pivot[0].cpu().numpy().astype(np.float32),
                          **_history_arrays(result.history)})
    first, last = result.history[0], result.history[-1]
    print(f"mse {first['mse']:.4f} -> {last['mse']:.4f} in {len(result.history)} steps"
          f"{' (stopped at the threshold)' if result.stopped_early else ''}; wrote {out} and "
          f"{pivot_out}")
    return 0
