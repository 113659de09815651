"""``vidinv models info|convert|init|list|assemble|pull``: inspect, convert, create and download
models."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidinv.errors import VidinvError


def _models_info(args: argparse.Namespace) -> int:
    from vidinv.models.generator_io import load_generator
    from vidinv.models.summary import summarize_generator

    generator = load_generator(args.path)
    print(f"{args.path}")
    for line in summarize_generator(generator).lines():
        print(f"  {line}")
    return 0


def _models_convert(args: argparse.Namespace) -> int:
    from vidinv.models.generator_io import load_generator, save_generator

    if Path(args.dst).exists() and not args.force:
        raise VidinvError(f"{args.dst}: exists; pass --force to overwrite it")
    generator = load_generator(args.src)
    save_generator(generator, args.dst)
    print(f"wrote {args.dst} ({generator.resolution} px, n_latent {generator.n_latent})")
    return 0


def _models_init(args: argparse.Namespace) -> int:
    import torch

    from vidinv.models.generator_io import save_generator
    from vidinv.models.stylegan2 import StyleGAN2Generator

    if Path(args.dst).exists() and not args.force:
        raise VidinvError(f"{args.dst}: exists; pass --force to overwrite it")
    torch.manual_seed(args.seed)
    limits = {"--resolution": (args.resolution, 8, 4096), "--style-dim": (args.style_dim, 1, 4096),
              "--n-mlp": (args.n_mlp, 1, 64), "--channel-max": (args.channel_max, 1, 4096),
              "--channel-multiplier": (args.channel_multiplier, 1 / 64, 64)}
    for option, (value, low, high) in limits.items():
        if not low <= value <= high:  # also refuses NaN
            raise VidinvError(f"{option} {value}: must be between {low:g} and {high:g}")
    try:
        generator = StyleGAN2Generator(
            resolution=args.resolution, style_dim=args.style_dim, n_mlp=args.n_mlp,
            channel_multiplier=args.channel_multiplier, channel_max=args.channel_max)
    except (ValueError, RuntimeError) as error:
        raise VidinvError(f"cannot build that generator: {error}") from None
    generator.latent_avg.copy_(generator.compute_latent_avg())
    save_generator(generator, args.dst)
    print(f"wrote {args.dst}: an untrained (random) {args.resolution} px generator, seed "
          f"{args.seed}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from vidinv.models import registry
    from vidinv.models.folder import DEFAULT_MODEL_FOLDER, GENERATOR_FILE

    if (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
        print(f"embedded default model (used when --model is not given): {DEFAULT_MODEL_FOLDER}")
        print("  64 px StyleGAN2 + Feature-Style Encoder, one identity; see MODEL_CARD.md there")
    installed = {entry.name: path for entry, path in registry.installed()}
    print(f"cache: {registry.default_cache_dir()}")
    for entry in registry.list_entries():
        state = f"installed at {installed[entry.name]}" if entry.name in installed else "pullable"
        print(f"  {entry.name:<28} {entry.kind:<10} {state}")
        print(f"  {'':<28} {entry.description}")
    return 0


def _models_assemble(args: argparse.Namespace) -> int:
    from vidinv.latent.assemble import assemble_model

    model = assemble_model(args.generator, args.encoder, args.output,
                           direction_paths=args.directions or [], force=args.force)
    print(f"wrote {model.folder}: {model.resolution} px generator ({model.n_latent} W+ "
          f"entries), {model.encoder_input} px encoder, directions: "
          f"{', '.join(model.directions) or 'none'}; fingerprint {model.model_fingerprint}")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from vidinv.models import registry

    path = registry.pull(args.name, progress=not args.quiet)
    print(path)
    return 0


def add_models_parser(commands) -> argparse.ArgumentParser:
    """Add ``models`` to the ``vidinv`` subcommands."""
    models = commands.add_parser("models", help="inspect, convert, create and download models")
    models_cmds = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    info = models_cmds.add_parser("info", help="resolution, n_latent, channels, params, FLOPs")
    info.add_argument("path", help="native .safetensors, rosinality .pt or NVIDIA .pkl")
    info.set_defaults(handler=_models_info)

    convert = models_cmds.add_parser("convert", help="convert a checkpoint to the native format")
    convert.add_argument("src", help="rosinality .pt, NVIDIA .pkl or native file")
    convert.add_argument("dst", help="output .safetensors")
    convert.add_argument("--force", action="store_true", help="overwrite DST")
    convert.set_defaults(handler=_models_convert, io_reads=("src",), io_writes=("dst",),
                         io_create_parents=True)

    init = models_cmds.add_parser("init", help="write an untrained generator (training start)")
    init.add_argument("dst", help="output .safetensors")
    init.add_argument("--resolution", type=int, default=256)
    init.add_argument("--style-dim", type=int, default=512)
    init.add_argument("--n-mlp", type=int, default=8)
    init.add_argument("--channel-multiplier", type=float, default=2)
    init.add_argument("--channel-max", type=int, default=512)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--force", action="store_true", help="overwrite DST")
    init.set_defaults(handler=_models_init, io_writes=("dst",), io_create_parents=True)

    listing = models_cmds.add_parser("list", help="installed models and models to pull")
    listing.set_defaults(handler=_models_list)

    assemble = models_cmds.add_parser(
        "assemble", help="check that a generator, an encoder and directions fit, and write "
        "them as one model folder (native files, fingerprint, model card)")
    assemble.add_argument("--generator", required=True,
                          help="NVIDIA .pkl, rosinality .pt or native generator")
    assemble.add_argument("--encoder", required=True,
                          help="official Feature-Style Encoder 143_enc.pth or native encoder")
    assemble.add_argument("--directions", nargs="+", metavar="[NAME=]FILE",
                          help="direction files (e4e/InterFaceGAN .pt, .npy, GANSpace, native)")
    assemble.add_argument("-o", "--output", required=True, help="the model folder to write")
    assemble.add_argument("--force", action="store_true", help="replace an existing folder")
    assemble.set_defaults(handler=_models_assemble)

    pull = models_cmds.add_parser("pull", help="download a public checkpoint into the cache")
    pull.add_argument("name")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(handler=_models_pull)
    return models
