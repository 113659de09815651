"""Training state as data: nested dicts/lists of tensors and scalars to safetensors + JSON.

Optimizer ``state_dict()``s (and anything else made of dicts, lists, tuples, tensors, numbers,
strings, booleans and None) are split into a flat ``{name: tensor}`` map and a JSON tree that
refers to the tensors by name; :func:`unflatten` rebuilds the original structure with the
original key types (an optimizer's integer parameter ids stay integers, tuples stay tuples).
The file is a native vidinv file (:mod:`vidinv.models.native`): nothing in it is executable.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vidinv.errors import CheckpointError, InputFileError
from vidinv.models.native import load_native, save_native

TRAINING_STATE_KIND = "training_state"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON tree for ``obj``; its tensors are added to ``tensors`` under ``prefix``-based names."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().clone()
        return {"tensor": prefix}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"cannot store dict key {key!r} of type {type(key).__name__}")
            items.append([key, flatten(value, f"{prefix}.{key}", tensors)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        values = [flatten(value, f"{prefix}.{i}", tensors) for i, value in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": values}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r}")


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(tree, dict):
        if "tensor" in tree:
            return tensors[tree["tensor"]]
        if "dict" in tree:
            return {key: unflatten(value, tensors) for key, value in tree["dict"]}
        if "list" in tree:
            return [unflatten(value, tensors) for value in tree["list"]]
        if "tuple" in tree:
            return tuple(unflatten(value, tensors) for value in tree["tuple"])
        raise ValueError(f"unknown node {sorted(tree)}")
    return tree


def save_state(path: str | Path, content: dict[str, Any]) -> Path:
    """Write a nested ``content`` dict as one native file (atomically)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(content, "state", tensors)
    return save_native(path, TRAINING_STATE_KIND, {"tree": tree}, tensors)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_state`; one-line errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no training state here; train without --resume first")
    checkpoint = load_native(path)
    if checkpoint.kind != TRAINING_STATE_KIND or "tree" not in checkpoint.config:
        raise CheckpointError(f"{path}: holds a {checkpoint.kind}, not a training state")
    try:
        return unflatten(checkpoint.config["tree"], checkpoint.tensors)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: damaged training state ({error}); resume from an "
                              "earlier checkpoint") from None


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[list[bool]]:
    """Turn the first Ctrl-C into a flag checked between steps (a second one interrupts now).

    Only in the main thread (signal handlers cannot be set elsewhere); otherwise a no-op flag.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        flag[0] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
