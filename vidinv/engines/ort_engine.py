"""Run an ONNX file with ONNX Runtime behind the :class:`~vidinv.engines.base.Engine` interface.

Tensors cross the boundary without copies where possible: inputs and outputs are torch tensors
bound to the session by pointer (``io_binding``), on the CPU or, with the CUDA provider, on the
GPU. Outputs whose shape cannot be worked out from the input sizes are fetched from ONNX Runtime
instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidinv.engines.base import TensorSpec, bind_dynamic_sizes, torch_dtype
from vidinv.errors import BackendUnavailableError, CheckpointError, InputFileError

_INSTALL_HINT = "pip install 'vidinv[onnx]'"
_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                 "int64": np.int64, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
                 "bool": np.bool_}

Provider = str | tuple[str, dict[str, Any]]


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or BackendUnavailableError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"ONNX Runtime is not installed or not usable ({exc}); install it with: "
            f"{_INSTALL_HINT}") from exc
    return onnxruntime


class OrtEngine:
    """An ONNX Runtime session; input and output specs are read from the graph.

    Args:
        onnx_path: the ``.onnx`` file (see :func:`vidinv.engines.export_onnx`).
        providers: ONNX Runtime execution providers in priority order, by full name or by the
            aliases ``"cpu"`` / ``"cuda"``, optionally as ``(name, options)``. Default: CPU.
            Every provider asked for must be available; ONNX Runtime's own silent fallback from
            CUDA to CPU is turned into an error.
        intra_op_threads: threads for one operator; default: ONNX Runtime's choice.
        name: for logs and errors; default ``"<file stem> (onnxruntime)"``.

    Raises:
        BackendUnavailableError: onnxruntime is missing, or a provider is not available.
        InputFileError: the file does not exist.
        CheckpointError: the file is not a loadable ONNX model.
    """

    def __init__(self, onnx_path: str | os.PathLike[str],
                 providers: Sequence[Provider] | None = None,
                 intra_op_threads: int | None = None, name: str | None = None) -> None:
        ort = import_onnxruntime()
        path = Path(onnx_path)
        if not path.is_file():
            raise InputFileError(f"ONNX file not found: {path}; export it first "
                                 "(vidinv.engines.export_generator)")
        providers = [_canonical_provider(p) for p in (providers or ["cpu"])]
        requested = [p if isinstance(p, str) else p[0] for p in providers]
        available = ort.get_available_providers()
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime provider(s) {missing} not available (this onnxruntime has "
                f"{available}); for CUDA install onnxruntime-gpu and use an NVIDIA GPU, or "
                "use the CPU provider")

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CheckpointError(f"{path} could not be loaded by ONNX Runtime ({first_line}); "
                                  "re-export it") from exc
        active = session.get_providers()
        if requested[0] not in active:
            raise BackendUnavailableError(
                f"ONNX Runtime could not start {requested[0]} (active: {active}); check the "
                "CUDA/cuDNN libraries onnxruntime-gpu needs, or use the CPU provider")

        self._session = session
        self._path = path
        if active[0] == "CUDAExecutionProvider":
            device_id = int(session.get_provider_options()["CUDAExecutionProvider"]
                            .get("device_id", 0))
            self._torch_device = torch.device("cuda", device_id)
            self._ort_device = ("cuda", device_id)
        else:
            self._torch_device = torch.device("cpu")
            self._ort_device = ("cpu", 0)
        self._input_specs = tuple(_spec(arg) for arg in session.get_inputs())
        self._output_specs = tuple(_spec(arg) for arg in session.get_outputs())
        self.device = str(self._torch_device)
        floats = {s.dtype for s in self._input_specs + self._output_specs} & {"float16",
                                                                              "float32"}
        self.precision = "fp16" if floats == {"float16"} else "fp32"
        self.name = name or f"{path.stem} (onnxruntime)"

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._output_specs

    @property
    def providers(self) -> list[str]:
        """The providers the session actually runs with, in priority order."""
        return list(self._session.get_providers())

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = bind_dynamic_sizes(self._input_specs, inputs, self.name)
        binding = self._session.io_binding()
        device_type, device_id = self._ort_device
        bound_inputs = []  # keeps the (possibly converted) input tensors alive during the run
        for spec in self._input_specs:
            tensor = inputs[spec.name].detach().to(
                device=self._torch_device, dtype=torch_dtype(spec.dtype)).contiguous()
            bound_inputs.append(tensor)
            binding.bind_input(spec.name, device_type, device_id, _NUMPY_DTYPES[spec.dtype],
                               tuple(tensor.shape), tensor.data_ptr())
        outputs: dict[str, torch.Tensor | None] = {}
        for spec in self._output_specs:
            try:
                shape = spec.resolve(sizes)
            except KeyError:  # a dimension only ONNX Runtime knows: let it allocate
                binding.bind_output(spec.name, device_type, device_id)
                outputs[spec.name] = None
                continue
            out = torch.empty(shape, dtype=torch_dtype(spec.dtype), device=self._torch_device)
            binding.bind_output(spec.name, device_type, device_id, _NUMPY_DTYPES[spec.dtype],
                                shape, out.data_ptr())
            outputs[spec.name] = out
        if self._torch_device.type == "cuda":
            # Inputs may still be being written by kernels on torch's stream.
            torch.cuda.current_stream(self._torch_device).synchronize()
        self._session.run_with_iobinding(binding)
        if any(value is None for value in outputs.values()):
            fetched = binding.copy_outputs_to_cpu()  # in output binding order
            for spec, array in zip(self._output_specs, fetched, strict=True):
                if outputs[spec.name] is None:
                    outputs[spec.name] = torch.from_numpy(np.ascontiguousarray(array)).to(
                        self._torch_device)
        elif self._torch_device.type == "cuda":
            binding.synchronize_outputs()
        return outputs  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"OrtEngine({str(self._path)!r}, providers={self.providers}, "
                f"device={self.device!r})")


def _canonical_provider(provider: Provider) -> Provider:
    if isinstance(provider, str):
        return _PROVIDER_ALIASES.get(provider.lower(), provider)
    name, options = provider
    return (_PROVIDER_ALIASES.get(name.lower(), name), dict(options))


def _spec(arg: Any) -> TensorSpec:
    """An ONNX Runtime NodeArg -> TensorSpec; unnamed dynamic dims get a made-up name."""
    shape = tuple(dim if isinstance(dim, int | str) and dim != "" else f"{arg.name}_dim{axis}"
                  for axis, dim in enumerate(arg.shape))
    try:
        dtype = _ORT_DTYPES[arg.type]
    except KeyError:
        raise CheckpointError(f"tensor {arg.name!r} has unsupported type {arg.type}") from None
    return TensorSpec(arg.name, shape, dtype)
