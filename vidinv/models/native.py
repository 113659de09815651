"""The native weight format: one safetensors file whose header carries the constructor JSON.

A native file holds the module's ``state_dict`` tensors and, in the safetensors metadata,
``vidinv.kind`` (e.g. ``generator``), ``vidinv.format_version`` and ``vidinv.config`` (the
constructor arguments as JSON). Nothing in it is executable; loading is ``strict``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.errors import CheckpointError, InputFileError

FORMAT_VERSION = "1"
_KIND_KEY = "vidinv.kind"
_VERSION_KEY = "vidinv.format_version"
_CONFIG_KEY = "vidinv.config"


@dataclass(frozen=True)
class NativeCheckpoint:
    """What a native file holds: its kind, constructor arguments and tensors."""

    kind: str
    config: dict
    tensors: dict[str, torch.Tensor]


def looks_like_safetensors(head: bytes) -> bool:
    """True when ``head`` (the first ≥ 9 bytes of a file) starts a safetensors header."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len < 100_000_000 and head[8:9] == b"{"


def read_head(path: Path, what: str, n_bytes: int = 16) -> bytes:
    """The first bytes of a checkpoint file, with one-line errors for a missing, folder,
    unreadable or empty ``path`` (``what`` names the file's role in the messages)."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file; check the {what} path")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder; pass the {what} file inside it")
    try:
        with path.open("rb") as handle:
            head = handle.read(n_bytes)
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file; re-download it")
    return head


def save_native(path: str | Path, kind: str, config: dict,
                tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` and ``config`` to ``path`` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    from vidinv.io_safety import replacing

    path = Path(path)
    metadata = {_KIND_KEY: kind, _VERSION_KEY: FORMAT_VERSION,
                _CONFIG_KEY: json.dumps(config, sort_keys=True)}
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with replacing(path) as tmp:
        save_file(contiguous, tmp, metadata=metadata)
    return path


def load_native(path: str | Path) -> NativeCheckpoint:
    """Read a native file; a foreign or damaged safetensors file is a :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged safetensors file ({error}); "
                              "re-download or re-convert it") from None
    if _KIND_KEY not in metadata or _CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path}: safetensors file without vidinv metadata; convert the "
                              "original checkpoint with `vidinv models convert SRC DST`")
    if metadata.get(_VERSION_KEY) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: native format version {metadata.get(_VERSION_KEY)!r} is "
                              f"not {FORMAT_VERSION!r}; upgrade vidinv or re-convert the file")
    try:
        config = json.loads(metadata[_CONFIG_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its constructor JSON is corrupt; re-convert it") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its constructor JSON is a {type(config).__name__}, not "
                              "an object; re-convert it")
    return NativeCheckpoint(kind=metadata[_KIND_KEY], config=config, tensors=tensors)


def load_native_module(path: Path, kind: str, build: Callable[..., torch.nn.Module],
                       noun: str) -> torch.nn.Module:
    """Build ``build(**config)`` from a native file of ``kind`` and load its tensors strictly.

    ``noun`` names the kind in messages (``"a generator"``, ``"an encoder"``).
    """
    checkpoint = load_native(path)
    if checkpoint.kind != kind:
        raise CheckpointError(f"{path}: holds a {checkpoint.kind}, not {noun}; pass it "
                              f"where a {checkpoint.kind} is expected")
    # The constructor JSON is checked against the tensors the file holds before anything is
    # allocated: built on the meta device (shapes only, no memory), the module must expect
    # exactly the file's tensors. A few hundred bytes asking for style_dim 20000 would
    # otherwise allocate gigabytes before the first shape check.
    # The package's own files (the embedded model) are not a stranger's: they skip the
    # meta-device build, which cost a second of CPU at every start (torch's meta kernels pull
    # in its compiler stack); the strict load below still checks every key and shape.
    _check_config_limits(checkpoint.config, path)
    if not is_package_file(path):
        skeleton = _build_checked(build, checkpoint.config, path, kind, device="meta")
        check_state_shapes(skeleton, checkpoint.tensors, str(path))
    module = _build_checked(build, checkpoint.config, path, kind, device=None)
    load_state_strict(module, checkpoint.tensors, str(path))
    return module


#: The folder of the files shipped inside the package.
PACKAGE_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def is_package_file(path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) is one of the package's own files."""
    return Path(path).resolve().is_relative_to(PACKAGE_ASSETS)


#: Largest number and longest list a constructor JSON may hold (resolutions, widths and layer
#: counts of real models are far below; the meta-device build costs time per layer).
MAX_CONFIG_NUMBER = 65_536
MAX_CONFIG_LIST = 64


def _check_config_limits(config: dict, path: Path) -> None:
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > MAX_CONFIG_LIST:
            raise CheckpointError(f"{path}: constructor argument {key!r} has {len(value)} "
                                  "entries; the file is corrupt or crafted")
        for item in values:
            if isinstance(item, int | float) and not isinstance(item, bool) \
                    and not abs(item) <= MAX_CONFIG_NUMBER:
                raise CheckpointError(f"{path}: constructor argument {key!r} = {item!r} is "
                                      f"beyond {MAX_CONFIG_NUMBER}; the file is corrupt or "
                                      "crafted")


def _build_checked(build: Callable[..., torch.nn.Module], config: dict, path: Path, kind: str,
                   device: str | None) -> torch.nn.Module:
    try:
        if device is None:
            return build(**config)
        with torch.device(device):
            return build(**config)
    except (TypeError, ValueError, KeyError, OverflowError, ZeroDivisionError, RuntimeError,
            NotImplementedError, RecursionError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: bad {kind} config ({message[:200]}); "
                              "re-convert it") from None


def check_state_shapes(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                       source: str) -> None:
    """The same key and shape checks as :func:`load_state_strict`, without loading anything
    (``module`` may live on the meta device)."""
    expected = module.state_dict()
    for name in tensors:
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected key {name!r}; the file does not "
                                  "match this model")
    for name, target in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{source}: missing key {name!r}; the file is incomplete or "
                                  "of another model")
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: {name!r} has shape {tuple(tensors[name].shape)}, "
                                  f"the model expects {tuple(target.shape)}")


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                      source: str) -> None:
    """``load_state_dict(strict=True)`` with one-line errors naming the first bad key."""
    check_state_shapes(module, tensors, source)
    module.load_state_dict(tensors, strict=True)
