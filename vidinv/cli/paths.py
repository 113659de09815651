"""The paths a parsed command line reads and writes, checked before any work.

Each subcommand declares them with ``set_defaults``; :func:`check_command_paths` turns the
declaration into plain lists of (label, path) for :func:`vidinv.io_safety.check_paths`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vidinv.io_safety import check_paths


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if v is not None]
    return [value]


def check_command_paths(args: argparse.Namespace) -> None:
    """:func:`~vidinv.io_safety.check_paths` for a parsed command line.

    A subcommand declares its paths with ``parser.set_defaults(io_reads=("input", "--model"),
    io_writes=("--output",), io_folders=("--out",), io_create_parents=True)``; entries are
    option spellings (``--lpips-lin``) or positional names (``input``), looked up as argparse
    destinations; ``io_mirror=("input", "--output")`` checks the output as a folder when the
    input is one (a folder of pictures). Read paths that do not exist are left out (a model
    name, a missing input that the command itself reports).
    """
    def collect(kind: str) -> list[tuple[str, object]]:
        found = []
        for option in getattr(args, kind, ()) or ():
            for value in _values(getattr(args, _dest(option), None)):
                found.append((option, value))
        return found

    reads = []
    for label, path in collect("io_reads"):
        if not isinstance(path, str | os.PathLike):
            continue
        if not Path(path).exists() and "=" in str(path):  # --attr FILE=STRENGTH
            path = str(path).rpartition("=")[0]
        if Path(path).exists():
            reads.append((label, path))
    writes, folders = collect("io_writes"), collect("io_folders")
    mirror = getattr(args, "io_mirror", None)  # (input, output): a folder in, a folder out
    if mirror:
        source = getattr(args, _dest(mirror[0]), None)
        if source and Path(source).is_dir():
            folders += [(label, path) for label, path in writes if label == mirror[1]]
            writes = [(label, path) for label, path in writes if label != mirror[1]]
    check_paths(reads, writes, folders,
                create_parents=bool(getattr(args, "io_create_parents", False)))
