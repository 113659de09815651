"""The ``vidinv`` command.

Heavy libraries (torch, onnx, …) are imported inside the command functions, so ``vidinv --help``
is fast. A :class:`~vidinv.errors.VidinvError` is printed as one line without a traceback and
exits non-zero; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vidinv import __version__
from vidinv.errors import VidinvError

Handler = Callable[[argparse.Namespace], int]


# --- models ----------------------------------------------------------------------------------


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
    try:
        generator = StyleGAN2Generator(
            resolution=args.resolution, style_dim=args.style_dim, n_mlp=args.n_mlp,
            channel_multiplier=args.channel_multiplier, channel_max=args.channel_max)
    except ValueError as error:
        raise VidinvError(f"cannot build that generator: {error}") from None
    generator.latent_avg.copy_(generator.compute_latent_avg())
    save_generator(generator, args.dst)
    print(f"wrote {args.dst}: an untrained (random) {args.resolution} px generator, seed "
          f"{args.seed}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from vidinv.models import registry

    installed = {entry.name: path for entry, path in registry.installed()}
    print(f"cache: {registry.default_cache_dir()}")
    for entry in registry.list_entries():
        state = f"installed at {installed[entry.name]}" if entry.name in installed else "pullable"
        print(f"  {entry.name:<28} {entry.kind:<10} {state}")
        print(f"  {'':<28} {entry.description}")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from vidinv.models import registry

    path = registry.pull(args.name, progress=not args.quiet)
    print(path)
    return 0


# --- engines ---------------------------------------------------------------------------------


def _engines_export(args: argparse.Namespace) -> int:
    from vidinv.engines.generator_export import export_generator
    from vidinv.models.generator_io import load_generator

    generator = load_generator(args.model)
    paths = export_generator(generator, Path(args.out_dir), k=args.k)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _engines_build(args: argparse.Namespace) -> int:
    from vidinv.engines.generator_export import build_generator_engines, load_generator_spec

    spec = load_generator_spec(args.spec)
    onnx_paths = {}
    for name in args.onnx:
        path = Path(name)
        if not path.is_file():
            raise VidinvError(f"{path}: no such ONNX file; make it with `vidinv engines export`")
        onnx_paths[path.stem] = path
    for stem, engine in build_generator_engines(onnx_paths, spec).items():
        print(f"{stem}: {engine}")
    return 0


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidinv", description="Real-time video GAN inversion and face editing.")
    parser.add_argument("--version", action="version", version=f"vidinv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = commands.add_parser("models", help="inspect, convert, create and download models")
    models_cmds = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    info = models_cmds.add_parser("info", help="resolution, n_latent, channels, params, FLOPs")
    info.add_argument("path", help="native .safetensors, rosinality .pt or NVIDIA .pkl")
    info.set_defaults(handler=_models_info)

    convert = models_cmds.add_parser("convert", help="convert a checkpoint to the native format")
    convert.add_argument("src", help="rosinality .pt, NVIDIA .pkl or native file")
    convert.add_argument("dst", help="output .safetensors")
    convert.add_argument("--force", action="store_true", help="overwrite DST")
    convert.set_defaults(handler=_models_convert)

    init = models_cmds.add_parser("init", help="write an untrained generator (training start)")
    init.add_argument("dst", help="output .safetensors")
    init.add_argument("--resolution", type=int, default=256)
    init.add_argument("--style-dim", type=int, default=512)
    init.add_argument("--n-mlp", type=int, default=8)
    init.add_argument("--channel-multiplier", type=float, default=2)
    init.add_argument("--channel-max", type=int, default=512)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--force", action="store_true", help="overwrite DST")
    init.set_defaults(handler=_models_init)

    listing = models_cmds.add_parser("list", help="installed models and models to pull")
    listing.set_defaults(handler=_models_list)

    pull = models_cmds.add_parser("pull", help="download a public checkpoint into the cache")
    pull.add_argument("name")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(handler=_models_pull)

    engines = commands.add_parser("engines", help="export ONNX files and build TensorRT engines")
    engines_cmds = engines.add_subparsers(dest="engines_command", metavar="ACTION",
                                          required=True)
    export = engines_cmds.add_parser("export", help="export the generator's synthesis to ONNX")
    export.add_argument("model", help="generator checkpoint")
    export.add_argument("-o", "--out-dir", default="engines/build", help="output folder")
    export.add_argument("--k", type=int, default=5, help="feature-tensor layer (default 5)")
    export.set_defaults(handler=_engines_export)

    build = engines_cmds.add_parser(
        "build", help="build TensorRT fp16 engines (needs an NVIDIA GPU and vidinv[tensorrt])")
    build.add_argument("onnx", nargs="+", help="ONNX files from `vidinv engines export`")
    build.add_argument("--spec", help="engine spec TOML (default: engines/generator.toml)")
    build.set_defaults(handler=_engines_build)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Show vidinv's own messages; other libraries keep their default (warnings only)."""
    logger = logging.getLogger("vidinv")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("vidinv: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except VidinvError as error:
        print(f"vidinv: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("vidinv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
