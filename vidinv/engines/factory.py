"""The one place a backend is chosen and a module becomes a running engine.

* :func:`engine_for_module`: a module, its specs and example inputs -> an engine on the chosen
  backend; exports the ONNX file into the cache folder it is given (once), derives the TensorRT
  optimisation profile from the batch size and checks it when the engine is made;
* :func:`create_engine`: the lower level — an engine from a module (torch) or an ONNX file;
* :func:`default_device` / :func:`default_precision`: what each backend runs on when not told.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from vidinv.config import Backend
from vidinv.engines.base import Engine, TensorSpec
from vidinv.errors import BackendUnavailableError

if TYPE_CHECKING:
    from vidinv.engines.generator_export import GeneratorEngineSpec
    from vidinv.engines.ort_engine import Provider
    from vidinv.engines.trt_engine import ProfileShapes

#: The backends' names (the one list is :data:`vidinv.config.Backend`).
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
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
                  name: str | None = None,
                  trace_cache: str | os.PathLike[str] | None = None) -> Engine:
    """Create an engine for ``backend``; everything downstream sees only :class:`Engine`.

    ``device`` defaults to :func:`default_device` and ``precision`` to ``"fp32"`` (``"fp16"``
    for TensorRT).

    * ``"torch"``: ``module`` with ``input_specs``/``output_specs``; CPU or CUDA, fp32 or
      (CUDA only) fp16 (torch's CPU threads are the caller's to set: one pool per process);
      its traced graphs kept in ``trace_cache`` when given (:class:`~vidinv.engines.
      torch_engine.TorchEngine`).
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
    device = device or default_device(backend)
    precision = precision or ("fp16" if backend == "tensorrt" else "fp32")

    if backend == "torch":
        if module is None or input_specs is None or output_specs is None:
            raise ValueError("backend 'torch' needs module, input_specs and output_specs")
        from vidinv.engines.torch_engine import TorchEngine

        return TorchEngine(module, input_specs, output_specs, device=device,
                           precision=precision, name=name, trace_cache=trace_cache)

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


def check_backend(backend: str) -> None:
    """BackendUnavailableError for a backend name that is not one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of "
                                      f"{', '.join(BACKENDS)}")


def default_device(backend: str) -> str:
    """Where ``backend`` runs when no device is given.

    TensorRT: ``cuda``. torch: ``cuda`` when torch sees a GPU, else ``cpu``. ONNX Runtime:
    ``cuda`` when torch sees a GPU and onnxruntime has the CUDA provider, else ``cpu``.
    """
    check_backend(backend)
    if backend == "tensorrt":
        return "cuda"
    if not torch.cuda.is_available():
        return "cpu"
    if backend == "torch":
        return "cuda"
    try:
        import onnxruntime
    except ImportError:
        return "cpu"
    return "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"


def default_precision(backend: str, spec: GeneratorEngineSpec | None = None) -> str:
    """``fp32``, except TensorRT: the spec's ``[tensorrt] precision`` (fp16 as shipped)."""
    check_backend(backend)
    if backend != "tensorrt":
        return "fp32"
    if spec is None:
        from vidinv.engines.generator_export import load_generator_spec

        spec = load_generator_spec()
    return spec.tensorrt.precision


def engine_for_module(module: nn.Module,
                      specs: tuple[Sequence[TensorSpec], Sequence[TensorSpec]],
                      example_inputs: Mapping[str, torch.Tensor], onnx_name: str, *,
                      backend: Backend | str, device: str | None = None,
                      precision: str | None = None, batch_size: int = 1,
                      cache_dir: str | os.PathLike[str] | None = None,
                      spec: GeneratorEngineSpec | None = None,
                      build_missing: bool = True, threads: int | None = None,
                      rebuild: bool = False) -> Engine:
    """``module`` as a running engine on ``backend``.

    Args:
        module: float32; ``forward`` takes the input spec names in order.
        specs: (input specs, output specs); the dynamic axis is the spec's ``batch_dim``.
        example_inputs: CPU float32 tensors, one per input, for the ONNX export.
        onnx_name: the ONNX file's name (e.g. ``"encoder.onnx"``); in ``cache_dir`` it is
            keyed by everything the export depends on (``encoder.<key>.onnx``,
            :func:`~vidinv.engines.onnx_export.export_key`: weights, vidinv's graph code,
            torch, opset, engine spec), and the exports of other keys are removed with their
            engines.
        backend, device, precision: None picks :func:`default_device` /
            :func:`default_precision`.
        batch_size: the largest batch the caller sends. TensorRT: profile min 1, opt
            ``batch_size``, max ``max(batch_size, spec max_batch)``, checked once the engine
            is loaded.
        cache_dir: ONNX files (exported once, kept) and TensorRT engines with their timing
            cache; needed for onnx and tensorrt. torch keeps its traced graphs in its
            ``traces`` folder.
        spec: the engine spec (opset, TensorRT workspace, optimisation level, precision);
            default: the shipped ``generator.toml``.
        build_missing: build a missing TensorRT engine instead of failing.
        rebuild: build the TensorRT engine anew even where one is cached (`vidinv engines
            build --rebuild`: replaces an engine that no longer matches).
        threads: ONNX Runtime's threads per call; None or 0: its default. (torch has one CPU
            pool per process: the pipeline sets it while it runs, see ``stage_runtime``.)
    """
    check_backend(backend)
    if spec is None:
        from vidinv.engines.generator_export import load_generator_spec

        spec = load_generator_spec()
    device = device or default_device(backend)
    precision = precision or default_precision(backend, spec)
    inputs, outputs = tuple(specs[0]), tuple(specs[1])
    name = f"{Path(onnx_name).stem} ({backend} {precision})"
    if backend == "torch":
        return create_engine("torch", module=module, input_specs=inputs, output_specs=outputs,
                             device=device, precision=precision, name=name,
                             trace_cache=None if cache_dir is None else Path(cache_dir) / "traces")

    if cache_dir is None:
        raise ValueError(f"backend {backend!r} needs a cache_dir for its ONNX files")
    if backend == "tensorrt":  # say what is missing before minutes of export
        from vidinv.engines.trt_engine import cuda_device, import_tensorrt

        import_tensorrt()
        cuda_device(device)
    import dataclasses

    from vidinv.engines.onnx_export import export_key, keyed_onnx_name, stale_exports

    key = export_key(module, spec.opset, dataclasses.asdict(spec))
    onnx_path = Path(cache_dir) / keyed_onnx_name(onnx_name, key)
    if not onnx_path.is_file():
        from vidinv.engines.onnx_export import export_onnx

        axes = {tensor.name: {axis: dim for axis, dim in tensor.dynamic_axes.items()}
                for tensor in inputs + outputs}
        export_onnx(module, dict(example_inputs), [tensor.name for tensor in outputs],
                    onnx_path, dynamic_axes=axes, opset=spec.opset)
        for stale in stale_exports(Path(cache_dir), onnx_name, onnx_path):
            stale.unlink(missing_ok=True)
    if backend == "onnx":
        return create_engine("onnx", onnx_path=onnx_path, device=device, precision=precision,
                             name=name, intra_op_threads=threads or None)

    from vidinv.engines.trt_engine import TrtEngine, pipeline_profile

    profile = pipeline_profile(inputs, batch_size, spec.tensorrt.max_batch, spec.batch_dim)
    engine = TrtEngine.from_onnx(onnx_path, cache_dir, profile, precision=precision,
                                 device=device, build_missing=build_missing,
                                 workspace_bytes=spec.tensorrt.workspace_bytes,
                                 optimization_level=spec.tensorrt.optimization_level,
                                 rebuild=rebuild)
    engine.check_batch(batch_size, spec.batch_dim)
    engine.name = name
    return engine
