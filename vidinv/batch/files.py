"""Inputs → tasks: expanding files, folders and globs; unique output names; finished outputs.

An output is **finished** when it opens, its first frame decodes and it holds as many video
frames as its input (counted as non-empty video packets, which needs no decoding: H.264 stores
one frame per packet). Outputs are written to a hidden temporary file and renamed when complete
(:class:`~vidinv.video.writer.VideoWriter`), so a file under the final name is either finished
or was put there by someone else; a worker that is killed leaves only its hidden temporary file,
which :func:`remove_partials` deletes before the video is tried again.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidinv.errors import InputFileError

#: Suffixes taken from folders (a file named on the command line is taken whatever its suffix).
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Task:
    """One video: its input, where its result goes, a name for reports, and what else the job
    needs to know (``meta``: e.g. RAVDESS fields; ``extra``: job-specific, picklable)."""

    name: str
    input: Path
    output: Path
    meta: dict[str, Any] = field(default_factory=dict)
    extra: Any = None


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not p.name.startswith("."))


def expand_inputs(items: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their videos, any depth, hidden files left out) and globs → video paths.

    Order: as given, each folder's or glob's matches sorted; a path met twice is kept once.
    A file, folder or glob that names nothing is an :class:`InputFileError`.
    """
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = _videos_in(path)
            if not matches:
                raise InputFileError(f"{path}: no video files in this folder "
                                     f"({', '.join(VIDEO_SUFFIXES)})")
        elif _GLOB_CHARS.search(text):
            matches = []
            for match in sorted(glob.glob(text, recursive=True)):
                match_path = Path(match)
                matches += _videos_in(match_path) if match_path.is_dir() else [match_path]
            if not matches:
                raise InputFileError(f"{text}: the pattern matches no file")
        else:
            raise InputFileError(f"{path}: no such file or folder")
        found += matches
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise InputFileError("no input videos; pass files, folders or globs")
    return list(unique.values())


def plan_outputs(inputs: Sequence[Path], outdir: Path, tail: str,
                 suffix: str = ".mp4") -> list[Path]:
    """``outdir/<stem><tail><suffix>`` per input; stems that collide get their folder's name
    in front (``<folder>-<stem>``), then ``-2``, ``-3``… in input order, so the same inputs
    always get the same names (a re-run finds its earlier outputs)."""
    def name(path: Path, with_folder: bool) -> str:
        stem = path.stem
        return f"{path.parent.name}-{stem}" if with_folder and path.parent.name else stem

    stems = [name(p, False) for p in inputs]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    stems = [name(p, counts[s] > 1) for p, s in zip(inputs, stems, strict=True)]
    taken: set[str] = set()
    outputs = []
    for stem in stems:
        unique, number = stem, 1
        while unique.lower() in taken:
            number += 1
            unique = f"{stem}-{number}"
        taken.add(unique.lower())
        outputs.append(outdir / f"{unique}{tail}{suffix}")
    return outputs


def check_no_overwrite(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """An output that is one of the inputs would destroy it: a one-line error instead."""
    resolved = {p.resolve(): p for p in inputs}
    for output in outputs:
        if output.resolve() in resolved:
            raise InputFileError(f"{output}: would overwrite the input "
                                 f"{resolved[output.resolve()]}; choose another output folder")


def count_video_frames(path: Path) -> int:
    """Video frames in ``path``, counted as non-empty packets of its first video stream.

    Raises whatever PyAV raises for a file that does not open (callers decide what it means).
    """
    from vidinv.video.reader import open_input_container

    with open_input_container(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def is_finished(output: Path, source: Path) -> bool:
    """True when ``output`` opens, decodes and has as many frames as ``source``."""
    import av

    from vidinv.video.reader import open_input_container

    if not output.is_file():
        return False
    try:
        with open_input_container(output) as container:
            stream = container.streams.video[0]
            next(container.decode(stream))
        return count_video_frames(output) == count_video_frames(source)
    except (av.error.FFmpegError, IndexError, StopIteration, OSError):
        return False


_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{8}\.partial(?P<suffix>\.[^.]+)$")


def partial_files(output: Path) -> list[Path]:
    """The hidden temporary files a :class:`~vidinv.video.writer.VideoWriter` for ``output``
    leaves behind when its process is killed (``.<stem>.<8 hex>.partial<suffix>``)."""
    if not output.parent.is_dir():
        return []
    pattern = f".{glob.escape(output.stem)}.*.partial{glob.escape(output.suffix)}"
    found = []
    for path in output.parent.glob(pattern):
        match = _PARTIAL.match(path.name)
        if match and match["stem"] == output.stem and match["suffix"] == output.suffix:
            found.append(path)
    return sorted(found)


def remove_partials(output: Path) -> int:
    """Delete :func:`partial_files` of ``output``; returns how many there were."""
    removed = 0
    for path in partial_files(output):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
