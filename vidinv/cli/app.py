"""The ``vidinv`` command: the parser that joins every command group, and :func:`main`.

Heavy libraries (torch, onnx, …) are imported inside the command functions, so ``vidinv --help``
is fast. A :class:`~vidinv.errors.VidinvError` is printed as one line without a traceback and
exits non-zero; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from vidinv import __version__
from vidinv.cli.batch import add_batch_parser
from vidinv.cli.bench import add_bench_parser
from vidinv.cli.directions import add_directions_parser
from vidinv.cli.edit import add_edit_parsers
from vidinv.cli.engines import add_engines_parser
from vidinv.cli.live import add_live_parser
from vidinv.cli.models import add_models_parser
from vidinv.cli.paths import check_command_paths
from vidinv.cli.personalize import add_personalize_parser
from vidinv.cli.train import add_train_parser
from vidinv.cli.ui import add_ui_parser
from vidinv.errors import VidinvError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidinv", description="Real-time video GAN inversion and face editing.")
    parser.add_argument("--version", action="version", version=f"vidinv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages and let native libraries' logs through")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for add in (add_edit_parsers, add_live_parser, add_ui_parser, add_models_parser,
                add_engines_parser, add_batch_parser, add_bench_parser, add_directions_parser,
                add_train_parser, add_personalize_parser):
        add(commands)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each message, not as it was when the handler was
    made: ``main`` may run many times in one process (the page, tests), each with its own
    stderr, and a handler holding the first one would write into a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(verbose: bool) -> None:
    """Show vidinv's own messages; other libraries keep their default (warnings only)."""
    logger = logging.getLogger("vidinv")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("vidinv: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


#: OS errors that the machine's state causes (full or read-only disk, permissions, name
#: limits), reported as one line; other OS errors keep their traceback.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                 errno.EPERM, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE})


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so every partial output is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _install_signal_handlers() -> dict[int, object]:
    """SIGTERM (docker stop, timeout, systemd) and SIGHUP (a closed terminal) raise
    :class:`Terminated` in the main thread, as SIGINT raises KeyboardInterrupt. Returns the
    previous handlers (restored when :func:`main` returns)."""
    import signal
    import threading

    previous: dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _raise_terminated)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.verbose:
        from vidinv.native_log import show_native_logs

        show_native_logs()  # otherwise routine MediaPipe/TFLite lines are filtered off fd 2
    handler: Handler = args.handler
    previous = _install_signal_handlers()
    try:
        check_command_paths(args)
        return handler(args)
    except VidinvError as error:
        print(f"vidinv: error: {error}", file=sys.stderr)
        return error.exit_code
    except Terminated as stop:
        print(f"vidinv: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("vidinv: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("vidinv: error: an input file is nested too deeply to be read (a crafted or "
              "corrupt file?); check the files you passed", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"vidinv: error: {where}{error.strerror}; free space, fix the permissions or "
              "choose another output path (nothing partial was kept)", file=sys.stderr)
        return 2
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)  # type: ignore[arg-type]
