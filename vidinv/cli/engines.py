"""``vidinv engines export|build``: ONNX files and TensorRT engines ahead of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidinv.cli.options import add_pipeline_options, load_bundle, pipeline_config
from vidinv.errors import VidinvError


def _engines_export(args: argparse.Namespace) -> int:
    from vidinv.engines.generator_export import export_generator
    from vidinv.models.generator_io import load_generator

    generator = load_generator(args.model)
    if args.k is not None:
        try:
            generator.synthesis.feature_shape(args.k)
        except ValueError as error:
            raise VidinvError(f"--k {args.k}: {error}") from None
    paths = export_generator(generator, Path(args.out_dir), k=args.k)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _engines_build(args: argparse.Namespace) -> int:
    """Make the engines `edit` will use, with the same settings, into the same cache."""
    import time

    from vidinv.engines.model_graphs import engines_for_bundle
    from vidinv.models.folder import engine_cache_folder
    from vidinv.pipeline.wiring import needs_reconstruction

    if not args.backend:
        args.backend = "tensorrt"
    config = pipeline_config(args)
    bundle = load_bundle(args)
    started = time.perf_counter()
    engines = engines_for_bundle(bundle, config.engine,
                                 with_reconstruction=needs_reconstruction(config),
                                 rebuild=args.rebuild)
    print(f"{engines.encoder_engine.name}, {engines.edit_render_engine.name} on "
          f"{engines.device}, batch {config.engine.batch_size}: ready in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"cache: {engine_cache_folder(bundle)}")
    return 0


def add_engines_parser(commands) -> argparse.ArgumentParser:
    """Add ``engines`` to the ``vidinv`` subcommands."""
    engines = commands.add_parser("engines", help="export ONNX files and build TensorRT engines")
    engines_cmds = engines.add_subparsers(dest="engines_command", metavar="ACTION",
                                          required=True)
    export = engines_cmds.add_parser("export", help="export the generator's synthesis to ONNX")
    export.add_argument("model", help="generator checkpoint")
    export.add_argument("-o", "--out-dir", default="engines/build", help="output folder")
    export.add_argument("--k", type=int, help="feature-tensor layer (default: the FSE's, 5)")
    export.set_defaults(handler=_engines_export, io_reads=("model",), io_folders=("--out-dir",))

    build = engines_cmds.add_parser(
        "build", help="make the engines `edit` uses (same options, same cache), ahead of time; "
        "default backend tensorrt (needs an NVIDIA GPU and vidinv[tensorrt])")
    add_pipeline_options(build)
    build.add_argument("--rebuild", action="store_true",
                       help="build the TensorRT engines anew, replacing cached ones (what an "
                       "engine that no longer matches asks for)")
    build.set_defaults(handler=_engines_build)
    return engines
