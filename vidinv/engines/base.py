"""The one interface every inference backend implements: named tensors in, named tensors out.

An :class:`Engine` is called with keyword tensors whose names and shapes follow its
``input_specs`` and returns a ``dict`` keyed by the names in its ``output_specs``. Inputs and
outputs are always ``torch.Tensor`` — ONNX Runtime and TensorRT convert at their own boundary —
so no pipeline stage ever branches on the backend.

``precision`` is the *compute* precision inside the engine (``"fp32"`` or ``"fp16"``); the
boundary dtype is the one in the specs (``float32`` for every exported graph), so an fp16 engine
takes and returns float32 tensors like the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

#: A dimension: a fixed size, or the name of a dynamic axis such as ``"batch"``.
Dim = int | str

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32`` (the spellings used in :class:`TensorSpec`)."""
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of "
                         f"{sorted(_TORCH_DTYPES)}") from None


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one engine input or output.

    ``shape`` holds ints for fixed sizes and strings for dynamic axes: ``("batch", 18, 512)``.
    Two dimensions with the same name must have the same size within one call.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        torch_dtype(self.dtype)  # validates the spelling
        for dim in self.shape:
            if not (isinstance(dim, str) and dim) and not (isinstance(dim, int) and dim >= 0):
                raise ValueError(f"{self.name}: bad dimension {dim!r} in shape {self.shape}")

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """``{axis: name}`` of the dynamic dimensions, e.g. ``{0: "batch"}``."""
        return {axis: dim for axis, dim in enumerate(self.shape) if isinstance(dim, str)}

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape once every dynamic axis has a size; KeyError names a missing one."""
        return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in self.shape)

    def __str__(self) -> str:
        dims = ",".join(str(dim) for dim in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


def bind_dynamic_sizes(specs: Sequence[TensorSpec], inputs: Mapping[str, torch.Tensor],
                       engine_name: str) -> dict[str, int]:
    """Check ``inputs`` against ``specs`` and return the size of every dynamic axis.

    Raises ValueError naming the engine and the tensor when a name is missing or unexpected, a
    rank or fixed size differs, or one dynamic axis (say ``batch``) has two different sizes.
    Dtypes are not checked here: each engine casts floating inputs to what it computes in.
    """
    expected = [spec.name for spec in specs]
    missing = [name for name in expected if name not in inputs]
    unexpected = [name for name in inputs if name not in expected]
    if missing or unexpected:
        raise ValueError(f"{engine_name}: expected inputs {expected}, got {sorted(inputs)}"
                         + (f" (missing {missing})" if missing else "")
                         + (f" (unexpected {unexpected})" if unexpected else ""))
    sizes: dict[str, int] = {}
    for spec in specs:
        shape = tuple(inputs[spec.name].shape)
        if len(shape) != len(spec.shape):
            raise ValueError(f"{engine_name}: input {spec} got shape {list(shape)}")
        for dim, size in zip(spec.shape, shape, strict=True):
            if isinstance(dim, int) and dim != size:
                raise ValueError(f"{engine_name}: input {spec} got shape {list(shape)}")
            if isinstance(dim, str) and sizes.setdefault(dim, size) != size:
                raise ValueError(f"{engine_name}: dynamic axis {dim!r} is {sizes[dim]} in one "
                                 f"input and {size} in {spec.name} {list(shape)}")
    return sizes


@runtime_checkable
class Engine(Protocol):
    """Named tensors in, named tensors out; see the module docstring.

    Attributes:
        name: what the engine runs, for logs and errors (e.g. ``"synthesis (onnxruntime)"``).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``; where the outputs live.
        precision: compute precision, ``"fp32"`` or ``"fp16"``.
    """

    name: str
    device: str
    precision: str

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]: ...

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...
