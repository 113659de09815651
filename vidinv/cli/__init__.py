"""The ``vidinv`` command: one module per command group (:mod:`~vidinv.cli.edit` for ``edit``
and ``invert``, :mod:`~vidinv.cli.live`, :mod:`~vidinv.cli.ui`, :mod:`~vidinv.cli.models`,
:mod:`~vidinv.cli.engines`, :mod:`~vidinv.cli.batch`, :mod:`~vidinv.cli.bench`,
:mod:`~vidinv.cli.directions`, :mod:`~vidinv.cli.train` with :mod:`~vidinv.cli.train_gan`,
:mod:`~vidinv.cli.personalize`), the options they share in :mod:`~vidinv.cli.options`, the
path guard's reading of a parsed command line in :mod:`~vidinv.cli.paths`, and the parser that
joins them with :func:`main` in :mod:`~vidinv.cli.app`. Nothing below this package knows argparse.
"""

from vidinv.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
