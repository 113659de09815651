"""``vidinv ui``: the local page to try edits."""

from __future__ import annotations

import argparse


def _ui(args: argparse.Namespace) -> int:
    from vidinv.ui.server import serve

    return serve(port=args.port, model=args.model, open_browser=not args.no_browser)


def add_ui_parser(commands) -> argparse.ArgumentParser:
    """Add ``ui`` to the ``vidinv`` subcommands."""
    ui = commands.add_parser("ui", help="a local web page to try edits (vidinv[ui])")
    ui.add_argument("--port", type=int,
                    help="port on 127.0.0.1 (default 7860, or a free one if that is busy)")
    ui.add_argument("--model", help="model folder preselected on the page (default: embedded)")
    ui.add_argument("--no-browser", action="store_true", help="do not open a browser")
    ui.set_defaults(handler=_ui)
    return ui
