"""Bounded loading of torch and numpy files: a small file may not cost gigabytes.

Every loader that reads a ``torch.save`` file or a ``.npy``/``.npz`` goes through here, so one
rule holds everywhere: **the bytes a loader materialises are bounded by the bytes the file
legitimately needs** —

* a zip archive (``torch.save``, ``.npz``) may not declare members that inflate beyond
  :data:`MAX_INFLATION` × its own size (+ :data:`SLACK_BYTES`): a deflate bomb is refused
  before anything is inflated;
* a tensor may not view more elements than its storage holds from its offset on: stride-0 or
  overlapping views (which ``.contiguous()`` would blow up to gigabytes) are refused, and all
  tensors together may not exceed :data:`MAX_INFLATION` × the file size;
* a ``.npy`` header may not declare more bytes than the file holds.

It also tells the formats apart that ``torch.load`` confuses: legacy (non-zip) ``torch.save``
files load (weights only), TorchScript archives get advice instead of "re-download".
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidinv.errors import CheckpointError

#: How much more than its own size a file may decompress / expand to.
MAX_INFLATION = 4
#: Headroom for tiny files (headers, small dictionaries).
SLACK_BYTES = 16 * 2**20
#: The pickled magic number that starts every legacy (non-zip) torch.save file.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: Deepest nesting of containers walked in a loaded object.
MAX_DEPTH = 64


class PlainPickleError(CheckpointError):
    """A plain pickle (e.g. an NVIDIA network .pkl) where a torch.save file was expected."""


def byte_budget(path: Path) -> int:
    """The most bytes anything loaded from ``path`` may occupy."""
    return MAX_INFLATION * path.stat().st_size + SLACK_BYTES


def is_legacy_torch_file(head: bytes) -> bool:
    """True when ``head`` (≥ 14 bytes) starts a legacy (pre-1.6, non-zip) ``torch.save`` file."""
    return head.startswith(LEGACY_TORCH_MAGIC)


def check_zip(path: Path, what: str = "file") -> list[str]:
    """The member names of the zip archive ``path``, after refusing a deflate bomb.

    Raises:
        CheckpointError: the declared uncompressed sizes exceed :func:`byte_budget`, or the
            archive's directory is unreadable.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({error}); "
                              f"re-download the {what}") from None
    declared = sum(info.file_size for info in infos)
    budget = byte_budget(path)
    if declared > budget:
        raise CheckpointError(f"{path}: its members inflate to {declared / 2**20:.0f} MiB from a "
                              f"{path.stat().st_size / 2**20:.1f} MiB file (a zip bomb?); "
                              f"refused, not a genuine {what}")
    return [info.filename for info in infos]


def _is_torchscript(names: Iterable[str]) -> bool:
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def torch_load(path: Path, what: str = "checkpoint",
               safe_globals: Iterable[Any] = (argparse.Namespace,)) -> Any:
    """``torch.load(weights_only=True)`` of a zip or legacy ``torch.save`` file, bounded.

    Raises:
        CheckpointError: a TorchScript archive (with what to do), a zip bomb, a tensor viewing
            more than its storage, more tensor bytes than the file justifies, nesting beyond
            :data:`MAX_DEPTH`, code objects (``weights_only`` refuses them), a damaged file.
    """
    with path.open("rb") as handle:
        head = handle.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(b"PK\x03\x04"):
        names = check_zip(path, what)
        if _is_torchscript(names):
            raise CheckpointError(
                f"{path}: a TorchScript archive (torch.jit.save), which vidinv does not run; in "
                "the code that made it, load it and save its weights with "
                "torch.save(model.state_dict(), 'weights.pt'), then pass that file")
    elif is_legacy_torch_file(head):
        check_legacy_storages(path)
    elif head.startswith(b"\x80"):
        raise PlainPickleError(f"{path}: a plain pickle (such as an NVIDIA StyleGAN2-ADA network "
                               f".pkl, which holds a generator), not a torch.save {what}")
    else:
        raise CheckpointError(f"{path}: not a torch.save file (neither a zip archive nor the "
                              f"legacy format); pass the {what} itself")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(list(safe_globals)):
                content = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply to be a {what}; the file is corrupt "
                              "or crafted") from None
    except Exception as error:  # torch raises many types for damaged files
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        full = str(error)
        if "torch_utils" in full or "dnnlib" in full:
            raise CheckpointError(f"{path}: an NVIDIA StyleGAN2-ADA network pickle saved with "
                                  "torch.save; pass the original .pkl instead") from None
        if "Unsupported global" in full or "Weights only load failed" in full:
            raise CheckpointError(f"{path}: refused to unpickle code objects ({message[:160]}); "
                                  "only plain state dicts are loaded") from None
        raise CheckpointError(f"{path}: truncated or corrupt torch file ({message[:160]}); "
                              "re-download it") from None
    check_tensor_views(content, path)
    return content


_STORAGE_ITEM_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
                       "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8,
                       "ComplexDouble": 16}


class _Anything:
    """What the legacy scanner builds for every global: accepts anything, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def __setstate__(self, state: Any) -> None:
        del state


class _LegacyScanner(pickle.Unpickler):
    """Reads the object pickle of a legacy torch.save file only to sum the storage sizes its
    persistent ids declare; builds nothing but inert placeholders, imports nothing."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        return type(name, (_Anything,), {})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = getattr(pid[1], "__name__", "")
            item = _STORAGE_ITEM_BYTES.get(kind.removesuffix("Storage"), 8)
            numel = pid[4] if isinstance(pid[4], int) else 0
            self.storages[str(pid[2])] = max(numel, 0) * item
        return None


def check_legacy_storages(source: Path | bytes, name: str | None = None) -> None:
    """Refuse a legacy torch.save file (a path, or the bytes of one) whose storages declare
    more bytes than it may hold: torch allocates each storage at its declared size before
    reading its bytes. A file gets :func:`byte_budget`; in-memory bytes (a storage payload
    inside an NVIDIA pickle, of which one file holds many) get exactly their own length."""
    scanner_errors = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
                      AttributeError, KeyError, struct.error, UnicodeDecodeError)
    if isinstance(source, bytes):
        label, budget, size = name or "a tensor storage", len(source), len(source)
    else:
        label, budget, size = str(source), byte_budget(source), source.stat().st_size
    try:
        with (io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")) as handle:
            for _ in range(3):  # magic number, protocol version, system info
                _LegacyScanner(handle).load()
            scanner = _LegacyScanner(handle)
            scanner.load()
    except RecursionError:
        raise CheckpointError(f"{label}: nested too deeply; the file is corrupt or "
                              "crafted") from None
    except scanner_errors as error:
        raise CheckpointError(f"{label}: truncated or corrupt legacy torch data "
                              f"({type(error).__name__}); re-download it") from None
    declared = sum(scanner.storages.values())
    if declared > budget:
        raise CheckpointError(f"{label}: its storages declare {declared / 2**20:.1f} MiB in "
                              f"{size / 2**20:.3f} MiB; truncated or crafted")


def check_tensor_views(content: Any, path: Path) -> None:
    """Refuse tensors that view more than their storage, and more tensor bytes than the file
    justifies (:func:`byte_budget`); walks dicts, lists, tuples and namespaces."""
    budget = byte_budget(path)
    total = 0
    stack: list[tuple[Any, int]] = [(content, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{path}: nested more than {MAX_DEPTH} levels deep; the file "
                                  "is corrupt or crafted")
        if isinstance(item, torch.Tensor):
            check_view(item, str(path))
            total += item.numel() * item.element_size()
            if total > budget:
                raise CheckpointError(f"{path}: its tensors add up to more than "
                                      f"{budget / 2**20:.0f} MiB from a "
                                      f"{path.stat().st_size / 2**20:.1f} MiB file; refused "
                                      "(shared or overlapping storages)")
        elif isinstance(item, dict):
            stack += [(value, depth + 1) for value in item.values()]
        elif isinstance(item, list | tuple):
            stack += [(value, depth + 1) for value in item]
        elif isinstance(item, argparse.Namespace):
            stack += [(value, depth + 1) for value in vars(item).values()]


def check_view(tensor: torch.Tensor, source: str) -> None:
    """Raise unless ``tensor`` views at most the elements its storage holds from its offset:
    no negative or zero strides on a dimension longer than 1, no overlap."""
    numel = tensor.numel()
    if numel == 0:
        return
    storage_elements = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
    available = storage_elements - tensor.storage_offset()
    if numel > available:
        raise CheckpointError(f"{source}: a tensor of {numel} elements views a storage of "
                              f"{available}; stride-0 or overlapping views are refused (the file "
                              "is corrupt or crafted)")
    for size, stride in zip(tensor.shape, tensor.stride(), strict=True):
        if size > 1 and stride <= 0:
            raise CheckpointError(f"{source}: a tensor has a stride of {stride}; stride-0 or "
                                  "negative views are refused (the file is corrupt or crafted)")


def check_npy_header(handle: io.BufferedIOBase, size: int, source: str) -> None:
    """Refuse a ``.npy`` stream whose header declares more data than ``size`` bytes (the
    file's or zip member's), or object dtypes. Leaves ``handle`` where it was."""
    start = handle.tell()
    try:
        magic = handle.read(8)
        if len(magic) < 8 or not magic.startswith(b"\x93NUMPY"):
            raise CheckpointError(f"{source}: not a .npy array")
        major = magic[6]
        length_bytes = 2 if major == 1 else 4
        raw = handle.read(length_bytes)
        if len(raw) < length_bytes:
            raise CheckpointError(f"{source}: truncated .npy header")
        (header_len,) = struct.unpack("<H" if length_bytes == 2 else "<I", raw)
        if header_len > 65_536:
            raise CheckpointError(f"{source}: .npy header of {header_len} bytes; corrupt")
        header = handle.read(header_len).decode("latin1")
    finally:
        handle.seek(start)
    try:
        fields = ast.literal_eval(header)
        dtype = np.dtype(fields["descr"])
        shape = tuple(int(n) for n in fields["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError):
        raise CheckpointError(f"{source}: unreadable .npy header") from None
    if dtype.hasobject:
        raise CheckpointError(f"{source}: an array of Python objects; only numbers are read")
    if any(n < 0 for n in shape):
        raise CheckpointError(f"{source}: negative .npy shape {shape}")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > size:
        raise CheckpointError(f"{source}: its header declares {declared} bytes of data "
                              f"(shape {shape}) but it holds {size}; truncated or crafted")


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (no pickles) after :func:`check_npy_header`."""
    with path.open("rb") as handle:
        check_npy_header(handle, os.fstat(handle.fileno()).st_size, str(path))
        return np.load(handle, allow_pickle=False)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), refusing zip bombs and lying headers first."""
    check_zip(path, ".npz file")
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                data = member.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise CheckpointError(f"{path}: member {info.filename} is not the size its "
                                      "directory says; corrupt")
            stream = io.BytesIO(data)
            check_npy_header(stream, len(data), f"{path}:{info.filename}")
            arrays[info.filename.removesuffix(".npy")] = np.load(stream, allow_pickle=False)
    return arrays
