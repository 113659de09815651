"""Run a plain ``nn.Module`` behind the :class:`~vidinv.engines.base.Engine` interface."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidinv.engines.base import TensorSpec, bind_dynamic_sizes, torch_dtype
from vidinv.errors import BackendUnavailableError

_COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def resolve_torch_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> torch.device; CUDA must be usable."""
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu' or 'cuda'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device={device!r} needs a CUDA build of torch and an NVIDIA GPU, and none is "
            "usable here; use device='cpu'")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


class TorchEngine:
    """An ``nn.Module`` called with the spec'd keyword inputs under ``torch.inference_mode``.

    ``module.forward`` must take the input names as parameters and return a tensor, a tuple of
    tensors (in ``output_specs`` order) or a dict keyed by the output names.

    The module is moved to ``device`` and, for ``precision="fp16"``, cast to half; if that needs
    a conversion, a copy is converted so the caller's module is left as it was. Floating inputs
    are cast to the compute dtype and outputs back to the spec dtype (float32), so callers see the
    same boundary as with every other engine. fp16 runs only on CUDA: on CPU it is refused.
    """

    def __init__(self, module: nn.Module, input_specs: Sequence[TensorSpec],
                 output_specs: Sequence[TensorSpec], device: str = "cpu",
                 precision: str = "fp32", name: str | None = None) -> None:
        if precision not in _COMPUTE_DTYPES:
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        torch_device = resolve_torch_device(device)
        if precision == "fp16" and torch_device.type == "cpu":
            raise BackendUnavailableError(
                "precision='fp16' with the torch backend needs device='cuda' (half-precision "
                "convolutions on CPU are slow or missing); use precision='fp32' on CPU")
        self._compute_dtype = _COMPUTE_DTYPES[precision]
        self._input_specs = tuple(input_specs)
        self._output_specs = tuple(output_specs)
        self._module = self._prepared(module, torch_device, self._compute_dtype)
        self._torch_device = torch_device
        self.device = str(torch_device)
        self.precision = precision
        self.name = name or f"{type(module).__name__} (torch)"

    @staticmethod
    def _prepared(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        tensors = list(module.parameters()) + list(module.buffers())
        needs_conversion = any(
            t.device != device or (t.is_floating_point() and t.dtype != dtype) for t in tensors)
        if needs_conversion:
            module = copy.deepcopy(module).to(device=device, dtype=dtype)
        return module.eval()

    @property
    def module(self) -> nn.Module:
        """The module that runs (a converted copy when device or dtype had to change)."""
        return self._module

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._output_specs

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        bind_dynamic_sizes(self._input_specs, inputs, self.name)
        args = {}
        for spec in self._input_specs:
            tensor = inputs[spec.name].to(self._torch_device)
            if tensor.is_floating_point():
                tensor = tensor.to(self._compute_dtype)
            args[spec.name] = tensor
        with torch.inference_mode():
            result = self._module(**args)
        return self._named_outputs(result)

    def _named_outputs(self, result: object) -> dict[str, torch.Tensor]:
        names = [spec.name for spec in self._output_specs]
        if isinstance(result, torch.Tensor):
            values: Sequence[torch.Tensor] = [result]
        elif isinstance(result, Mapping):
            if sorted(result) != sorted(names):
                raise ValueError(f"{self.name}: module returned {sorted(result)}, "
                                 f"specs name {names}")
            values = [result[name] for name in names]
        else:
            values = list(result)  # type: ignore[call-overload]
        if len(values) != len(names):
            raise ValueError(f"{self.name}: module returned {len(values)} outputs, "
                             f"specs name {len(names)}: {names}")
        return {spec.name: value.to(torch_dtype(spec.dtype))
                for spec, value in zip(self._output_specs, values, strict=True)}

    def __repr__(self) -> str:
        return f"TorchEngine({self.name!r}, device={self.device!r}, precision={self.precision!r})"
