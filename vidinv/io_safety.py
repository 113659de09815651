"""One guard for every command: nothing it writes may be something it reads, or each other.

Before any work starts a command lists the paths it reads (inputs, models, direction files)
and the paths it writes (outputs, latent archives, live recordings, converted models, run and
bench folders) and calls :func:`check_paths`. It refuses, with one line naming both paths:

* a written path that is the same file as a read path by any spelling: ``./a.mp4`` and
  ``a.mp4``, a symlink to the input, or a hard link to it (same device and inode);
* two written paths that are the same file (``-o x.mp4 --latents x.mp4``);
* a written file that is an existing folder, a written folder that is an existing file, an
  output whose folder does not exist or cannot be written (read-only file system).

What happens when a written path already exists is the command's business (``edit`` and
``invert`` replace an existing output file atomically, ``models convert`` wants ``--force``);
this guard only refuses the combinations that would destroy an input or a sibling output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from vidinv.errors import InputFileError, VidinvError


class PathConflictError(VidinvError):
    """A command would write over one of its own inputs, or write two outputs to one file."""


@dataclass(frozen=True)
class _Identity:
    """What makes two paths the same file: (device, inode) if it exists, else the real path."""

    inode: tuple[int, int] | None
    real: str

    def same_as(self, other: _Identity) -> bool:
        if self.inode is not None and other.inode is not None:
            return self.inode == other.inode
        return self.real == other.real


def _identity(path: Path) -> _Identity:
    real = os.path.realpath(path)  # follows symlinks, also of a not-yet-existing file's parents
    try:
        stat = os.stat(path)
    except OSError:
        return _Identity(None, real)
    return _Identity((stat.st_dev, stat.st_ino), real)


Named = tuple[str, "str | os.PathLike[str] | None"]


def _named(paths: Iterable[Named]) -> list[tuple[str, Path]]:
    return [(label, Path(path)) for label, path in paths if path not in (None, "")]


#: Bytes the hidden temporary name of an output adds to its name (``.NAME.1a2b3c4d.partial``).
TEMP_NAME_EXTRA = 32


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _nearest_existing(path: Path) -> Path:
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_writable(label: str, path: Path, folder: bool, create_parents: bool) -> None:
    if folder:
        if path.exists() and not path.is_dir():
            raise InputFileError(f"{label} {path}: is a file, not a folder; give a folder path")
    else:
        if path.is_dir():
            raise InputFileError(f"{label} {path}: is an existing folder; give a file path "
                                 "(a new name, or a file inside that folder)")
        if path.exists() and not path.is_file():
            # A device or pipe (/dev/null): the atomic rename would replace the node itself.
            raise InputFileError(f"{label} {path}: is not a regular file (a device or pipe); "
                                 "give the path of a file to write")
        parent = path.parent
        if not create_parents and not parent.is_dir():
            raise InputFileError(f"{label} {path}: the folder {parent} does not exist; create "
                                 "it first")
    anchor = _nearest_existing(path if folder else path.parent)
    if anchor.is_dir() and len(path.name.encode()) + TEMP_NAME_EXTRA > _name_max(anchor):
        raise InputFileError(f"{label} {path.name[:40]}…: the name is too long for this file "
                             f"system ({len(path.name.encode())} bytes, and the temporary file "
                             f"beside it adds {TEMP_NAME_EXTRA}); choose a shorter name")
    if not anchor.is_dir():
        raise InputFileError(f"{label} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InputFileError(f"{label} {path}: cannot write in {anchor} (read-only file system "
                             "or no permission); choose another output path")


def check_paths(reads: Iterable[Named], writes: Iterable[Named] = (),
                write_folders: Iterable[Named] = (), *, create_parents: bool = False) -> None:
    """Refuse (one line) before any work if a written path is a read path or another written one.

    Args:
        reads: (label, path) of every file or folder the command reads; None entries are
            skipped. A folder read (a model folder) also protects every file directly in it
            and in its ``directions/`` subfolder.
        writes: (label, path) of every file the command writes.
        write_folders: (label, path) of every folder the command writes files into.
        create_parents: the command creates missing parent folders of ``writes`` itself.

    Raises:
        PathConflictError: a written path is the same file as a read path (by any spelling,
            symlink or hard link) or as another written path.
        InputFileError: an output cannot be written where asked (see the module docstring).
    """
    read_list = _expand_folders(_named(reads))
    file_writes = _named(writes)
    folder_writes = _named(write_folders)
    read_ids = [(label, path, _identity(path)) for label, path in read_list]
    written: list[tuple[str, Path, _Identity]] = []
    for label, path in [*file_writes, *folder_writes]:
        identity = _identity(path)
        for read_label, read_path, read_id in read_ids:
            if identity.same_as(read_id):
                raise PathConflictError(
                    f"{label} {path} is the same file as the {read_label} {read_path}; writing "
                    "it would destroy that input: choose another output path")
        for other_label, other_path, other_id in written:
            if identity.same_as(other_id):
                raise PathConflictError(
                    f"{label} {path} and {other_label} {other_path} are the same file; give "
                    "each output its own path")
        written.append((label, path, identity))
    for label, path in file_writes:
        _check_writable(label, path, folder=False, create_parents=create_parents)
    for label, path in folder_writes:
        _check_writable(label, path, folder=True, create_parents=True)


def _expand_folders(reads: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    expanded: list[tuple[str, Path]] = []
    for label, path in reads:
        expanded.append((label, path))
        if path.is_dir():
            for folder in (path, path / "directions"):
                if folder.is_dir():
                    expanded += [(f"{label} file", child) for child in sorted(folder.iterdir())
                                 if child.is_file()]
    return expanded


def temporary_beside(path: Path, suffix: str = ".part") -> Path:
    """A new, empty hidden file beside ``path`` under a random name, created exclusively
    (``O_EXCL``): a leftover or planted file or symlink is never written through. The caller
    renames it over ``path`` when complete, or deletes it."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], suffix: str = ".part") -> Iterator[Path]:
    """Write a file whole or not at all: ``with replacing(path) as tmp: save(tmp)``.

    ``tmp`` is a new, exclusive temporary file beside ``path`` (the suffix keeps writers that
    choose a format by the name happy). When the block ends without an exception, ``tmp`` is
    flushed to disk (fsync) and renamed over ``path``; on any failure it is removed and
    ``path`` is left as it was. The one write-then-rename of the package.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, suffix)
    try:
        yield tmp
        put_in_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def put_in_place(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Flush the finished file ``tmp`` to disk (fsync) and rename it over ``path``; for writers
    that keep their temporary file open longer than a ``with`` block (see :func:`replacing`)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
        give_umask_permissions(handle.fileno())
    os.replace(tmp, path)


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_permissions(file: int | str | os.PathLike[str]) -> None:
    """Give a finished file the permissions a plain ``open(path, "w")`` would have given it
    (0666 less the umask): temporary files are created 0600 (``mkstemp``), and an output must
    not end up readable by its owner only when the user's umask says otherwise."""
    mode = 0o666 & ~current_umask()
    try:
        os.chmod(file, mode)
    except OSError:  # a file system without modes (vfat): the rename still happens
        pass


class FinishedOrAbandoned:
    """A writer used as ``with``: :meth:`open` on entry, then :meth:`close` (the output put in
    place) when the block ends normally, :meth:`abort` (nothing left looking complete) when it
    raises."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_atomically(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all (see :func:`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def move_folder_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished folder ``tmp`` to ``folder``; an existing ``folder`` is set aside
    until the new one is in place, then deleted (restored if the rename fails)."""
    import secrets
    import shutil

    old: Path | None = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.old")
        os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- JSON that holds ∞ (an infinite PSNR): written as "inf", read back as math.inf ---------


def to_jsonable(value: Any) -> Any:
    """``value`` with ±∞ as ``"inf"``/``"-inf"``, NaN as None, paths and numpy scalars plain."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    return value


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable` for ±∞."""
    if value in ("inf", "-inf"):
        return math.inf if value == "inf" else -math.inf
    if isinstance(value, dict):
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON (∞ as "inf"), written to a temporary file then renamed."""
    write_atomically(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return from_jsonable(json.loads(path.read_text(encoding="utf-8")))
