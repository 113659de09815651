"""``vidinv ui``: the local page to try edits."""

from __future__ import annotations

import argparse

from vidinv.cli.options import add_face_options, pipeline_config


def _ui(args: argparse.Namespace) -> int:
    from vidinv.ui.server import serve

    config = pipeline_config(args)  # --face / --face-ref: the page's first face choice
    return serve(port=args.port, model=args.model, open_browser=not args.no_browser,
                 max_upload_bytes=args.max_upload_mb << 20, config=config)


def _megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of MB: {text!r}") from None
    if not 1 <= value <= 1 << 20:
        raise argparse.ArgumentTypeError(f"must be between 1 and {1 << 20} MB (got {value})")
    return value


def add_ui_parser(commands) -> argparse.ArgumentParser:
    """Add ``ui`` to the ``vidinv`` subcommands."""
    ui = commands.add_parser("ui", help="a local web page to try edits (vidinv[ui])")
    ui.add_argument("--port", type=int,
                    help="port on 127.0.0.1 (default 7860, or a free one if that is busy)")
    ui.add_argument("--model", help="model folder preselected on the page (default: embedded)")
    ui.add_argument("--max-upload-mb", type=_megabytes, default=512, metavar="MB",
                    help="the largest clip the page accepts (default 512)")
    ui.add_argument("--no-browser", action="store_true", help="do not open a browser")
    add_face_options(ui)
    ui.set_defaults(handler=_ui, io_reads=("--face-ref",))
    return ui
