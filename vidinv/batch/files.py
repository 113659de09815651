"""Inputs → tasks: expanding files, folders and globs; unique output names; finished outputs.

Folders and ``**`` globs are walked without following symbolic links to folders (a link loop
cannot make a walk endless); the output folder is never searched for inputs, so ``batch edit
clips/ -o clips/out/`` does not take its own outputs as inputs on a re-run.

An output is **finished** — skipped on a re-run — only when its record (the sidecar
``OUT.vidinv.json``, :func:`sidecar_path`) says it was made from the same input (sha256 of the
whole file), with the same settings, model and direction, by the same vidinv version, and the
output is still the file the record describes: the same size, and every one of its frames
decodes (as many as were written). Anything else is redone, and :func:`why_redo` says why in
one phrase. The sidecar is written (atomically) after the output is complete and removed before
an output is redone, so it never describes another file.

Outputs are written to a hidden temporary file and renamed when complete
(:class:`~vidinv.video.writer.VideoWriter`); a worker that is killed leaves only its hidden
temporary file, which :func:`remove_partials` deletes before the video is tried again.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidinv.errors import InputFileError
from vidinv.video.images import VIDEO_SUFFIXES as _VIDEO_SUFFIXES

#: Suffixes taken from folders (a file named on the command line is taken whatever its suffix).
VIDEO_SUFFIXES = _VIDEO_SUFFIXES
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


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    real = path.resolve()
    return any(real.is_relative_to(folder) for folder in folders)


def _videos_in(folder: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Video files under ``folder``, any depth; hidden names, ``exclude``d folders and
    symbolic links to folders are not entered (``Path.rglob`` does not follow them)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and not _inside(p, exclude))


def _glob(pattern: str) -> list[Path]:
    """``glob.glob(pattern, recursive=True)`` without following symbolic links to folders
    (``glob``'s ``**`` follows them, and a link loop makes it run for ever); hidden names are
    matched only by a pattern part that starts with a dot, as in the shell."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) and not _GLOB_CHARS.search(parts[fixed]):
        fixed += 1
    root = Path(*parts[:fixed]) if fixed else Path(".")
    rest = parts[fixed:]
    if not rest:
        return [root] if root.exists() else []
    if not root.is_dir():
        return []
    found = []
    for match in root.glob(str(Path(*rest))):
        tail = match.relative_to(root).parts
        if any(name.startswith(".") and not wanted.startswith(".")
               for name, wanted in zip(tail, rest, strict=False)):
            continue
        found.append(match if fixed else Path(*tail))
    return sorted(set(found))


def expand_inputs(items: Sequence[str | Path], exclude: Sequence[str | Path] = ()
                  ) -> list[Path]:
    """Files, folders (their videos, any depth, hidden files left out) and globs → video paths.

    Order: as given, each folder's or glob's matches sorted; a path met twice is kept once.
    Folders and globs are searched without following symbolic links to folders and without
    entering the ``exclude`` folders (the output folder); a file named on its own is taken.
    A file, folder or glob that names nothing is an :class:`InputFileError`.
    """
    excluded = [Path(folder).resolve() for folder in exclude]
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = _videos_in(path, excluded)
            if not matches:
                raise InputFileError(f"{path}: no video files in this folder "
                                     f"({', '.join(VIDEO_SUFFIXES)})"
                                     + (" outside the output folder" if excluded else ""))
        elif _GLOB_CHARS.search(text):
            matches = []
            walked: list[Path] = []
            for match_path in _glob(text):  # sorted: a folder comes before its subfolders
                if match_path.is_dir():
                    if not any(match_path.is_relative_to(done) for done in walked):
                        walked.append(match_path)  # its subfolders are walked with it
                        matches += _videos_in(match_path, excluded)
                elif match_path.is_file() and not _inside(match_path, excluded):
                    matches.append(match_path)
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


def decoded_frame_count(path: Path) -> int | None:
    """Video frames of ``path`` that decode (every packet decoded, to the last frame), or None
    when the file does not open or a packet does not decode (a cut or damaged file)."""
    import av

    from vidinv.errors import VidinvError
    from vidinv.video.reader import open_input_container

    try:
        with open_input_container(path) as container:
            stream = container.streams.video[0]
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, IndexError, OSError, ValueError, VidinvError):
        return None


def is_finished(output: Path, source: Path) -> bool:
    """True when every frame of ``output`` decodes and it has as many as ``source``."""
    if not output.is_file():
        return False
    try:
        expected = count_video_frames(source)
    except Exception:  # noqa: BLE001 - a source that does not open has no finished output
        return False
    return decoded_frame_count(output) == expected


# --- what made an output: the sidecar ----------------------------------------------------------

SIDECAR_SUFFIX = ".vidinv.json"
SIDECAR_KIND = "vidinv batch output"


def sidecar_path(output: Path) -> Path:
    """``OUT.vidinv.json`` beside ``OUT``: what made it (see the module docstring)."""
    return output.with_name(output.name + SIDECAR_SUFFIX)


def file_sha256(path: Path) -> str:
    """sha256 of the whole file (hex)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _first_change(old: Any, new: Any) -> str:
    before, after = _flat(old if isinstance(old, dict) else {"value": old}), \
        _flat(new if isinstance(new, dict) else {"value": new})
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            return f"{key} {before.get(key)!r} → {after.get(key)!r}"
    return "?"


#: The parts of a record that must match, in the order they are checked, and how to say it.
_MADE_BY_PARTS = (
    ("input", "the input is not the one it was made from"),
    ("model", "it was made with another model"),
    ("direction", "it was made with another edit direction"),
    ("settings", "it was made with other settings"),
    ("vidinv_version", "it was made by another vidinv version"),
)


def why_redo(output: Path, made_by: dict[str, Any]) -> str | None:
    """None when ``output`` is finished for ``made_by`` (skip it), ``""`` when there is no
    output yet, else why it must be made again (one phrase)."""
    import json

    sidecar = sidecar_path(output)
    if not output.exists():
        return ""
    if not sidecar.is_file():
        return f"no {sidecar.name} says what made it"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("kind") != SIDECAR_KIND:
            raise ValueError("not a sidecar")
        made = record["made_by"]
        size, frames = int(record["output_size"]), int(record["frames"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        return f"its {sidecar.name} does not read as vidinv's record"
    if not isinstance(made, dict):
        return f"its {sidecar.name} does not read as vidinv's record"
    for key, reason in _MADE_BY_PARTS:
        if made.get(key) != made_by.get(key):
            detail = ""
            if key == "settings":
                detail = f" ({_first_change(made.get(key), made_by.get(key))})"
            elif key == "vidinv_version":
                detail = f" ({made.get(key)} → {made_by.get(key)})"
            return reason + detail
    actual = output.stat().st_size
    if actual != size:
        return f"the output is not the file that was written ({actual} bytes, not {size})"
    decoded = decoded_frame_count(output)
    if decoded != frames:
        return ("the output does not decode" if decoded is None
                else f"only {decoded} of its {frames} frames decode")
    return None


def write_sidecar(output: Path, made_by: dict[str, Any], frames: int) -> Path:
    """Record (atomically) that ``output``, now complete, was made by ``made_by``."""
    import json

    from vidinv.io_safety import write_atomically

    sidecar = sidecar_path(output)
    write_atomically(sidecar, json.dumps(
        {"kind": SIDECAR_KIND, "output": output.name, "output_size": output.stat().st_size,
         "frames": int(frames), "made_by": made_by}, indent=2, allow_nan=False) + "\n")
    return sidecar


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
