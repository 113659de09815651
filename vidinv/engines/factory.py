"""The one place a backend is chosen: :func:`create_engine`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from torch import nn

from vidinv.engines.base import Engine, TensorSpec
from vidinv.errors import BackendUnavailableError

if TYPE_CHECKING:
    from vidinv.engines.ort_engine import Provider
    from vidinv.engines.trt_engine import ProfileShapes

Backend = Literal["torch", "onnx", "tensorrt"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "tensorrt")
T = TypeVar("T")


def create_engine(backend: Backend | str, *, module: nn.Module | None = None,
                  input_specs: Sequence[TensorSpec] | None = None,
                  output_specs: Sequence[TensorSpec] | None = None,
                  onnx_path: str | os.PathLike[str] | None = None,
                  device: str | None = None, precision: str | None = None,
                  providers: Sequence[Provider] | None = None,
                  intra_op_threads: int | None = None,
                  cache_dir: str | os.PathLike[str] | None = None,
                  profile: ProfileShapes | None = None, build_missing: bool = True,
                  name: str | None = None) -> Engine:
    """Create an engine for ``backend``; everything downstream sees only :class:`Engine`.

    ``device`` defaults to ``"cpu"`` (``"cuda"`` for TensorRT) and ``precision`` to ``"fp32"``
    (``"fp16"`` for TensorRT).

    * ``"torch"``: ``module`` with ``input_specs``/``output_specs``; CPU or CUDA, fp32 or
      (CUDA only) fp16.
    * ``"onnx"``: ONNX Runtime on ``onnx_path``; specs come from the graph. ``device="cuda"``
      asks for the CUDA provider (CPU as fallback for single operators), or pass ``providers``.
      Runs the graph's own precision (fp32 for exported files).
    * ``"tensorrt"``: the engine for ``onnx_path`` cached in ``cache_dir`` for ``profile``
      (see :func:`vidinv.engines.batch_profile`); built first if missing and
      ``build_missing``; a cached engine built for anything else raises EngineMismatchError.
      ``device`` must be CUDA.

    Raises BackendUnavailableError (naming the extra to install) when the backend, CUDA, or the
    precision asked for is not available, and ValueError when a required argument is missing.
    """
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of "
                                      f"{', '.join(BACKENDS)}")
    if backend == "tensorrt":
        device = device or "cuda"
        precision = precision or "fp16"
    else:
        device = device or "cpu"
        precision = precision or "fp32"

    if backend == "torch":
        if module is None or input_specs is None or output_specs is None:
            raise ValueError("backend 'torch' needs module, input_specs and output_specs")
        from vidinv.engines.torch_engine import TorchEngine

        return TorchEngine(module, input_specs, output_specs, device=device,
                           precision=precision, name=name)

    if backend == "onnx":
        onnx_path = _require(onnx_path, "onnx_path", backend)
        if precision != "fp32":
            raise BackendUnavailableError(
                f"backend 'onnx' runs the exported float32 graph, not {precision}; use "
                "precision='fp32', or backend='tensorrt' for fp16")
        from vidinv.engines.ort_engine import OrtEngine

        if providers is None:
            providers = _ort_providers(device)
        return OrtEngine(onnx_path, providers=providers, intra_op_threads=intra_op_threads,
                         name=name)

    # backend == "tensorrt"
    onnx_path = _require(onnx_path, "onnx_path", backend)
    cache_dir = _require(cache_dir, "cache_dir", backend)
    profile = _require(profile, "profile", backend)
    from vidinv.engines.trt_engine import TrtEngine

    engine = TrtEngine.from_onnx(onnx_path, cache_dir, profile, precision=precision,
                                 device=device, build_missing=build_missing)
    if name is not None:
        engine.name = name
    return engine


def _require(value: T | None, what: str, backend: str) -> T:
    if value is None:
        raise ValueError(f"backend {backend!r} needs {what}")
    return value


def _ort_providers(device: str) -> list[Provider]:
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}),
                "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
