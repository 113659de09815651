"""Inference engines: one interface, three backends (torch, ONNX Runtime, TensorRT).

Names are imported lazily: ``import vidinv.engines`` imports neither torch nor onnx,
onnxruntime or tensorrt; each backend's packages are imported when that backend is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidinv.engines.base import Engine, TensorSpec
    from vidinv.engines.factory import BACKENDS, create_engine, engine_for_module
    from vidinv.engines.generator_export import (
        GeneratorEngineSpec,
        SynthesisModule,
        SynthesisWithFeaturesModule,
        export_generator,
        load_generator_spec,
        synthesis_features_specs,
        synthesis_specs,
    )
    from vidinv.engines.model_graphs import (
        EditRenderGraph,
        EncoderGraph,
        ModelEngines,
        make_model_engines,
    )
    from vidinv.engines.onnx_export import export_onnx, read_onnx_specs
    from vidinv.engines.ort_engine import OrtEngine
    from vidinv.engines.torch_engine import TorchEngine
    from vidinv.engines.trt_engine import (
        TrtEngine,
        batch_profile,
        build_engine,
        engine_cache_key,
        engine_key_parts,
        engine_paths,
        pipeline_profile,
        verify_sidecar,
        write_sidecar,
    )

_WHERE = {
    "Engine": "vidinv.engines.base",
    "TensorSpec": "vidinv.engines.base",
    "BACKENDS": "vidinv.engines.factory",
    "create_engine": "vidinv.engines.factory",
    "engine_for_module": "vidinv.engines.factory",
    "EditRenderGraph": "vidinv.engines.model_graphs",
    "EncoderGraph": "vidinv.engines.model_graphs",
    "ModelEngines": "vidinv.engines.model_graphs",
    "make_model_engines": "vidinv.engines.model_graphs",
    "pipeline_profile": "vidinv.engines.trt_engine",
    "TorchEngine": "vidinv.engines.torch_engine",
    "OrtEngine": "vidinv.engines.ort_engine",
    "TrtEngine": "vidinv.engines.trt_engine",
    "batch_profile": "vidinv.engines.trt_engine",
    "build_engine": "vidinv.engines.trt_engine",
    "engine_cache_key": "vidinv.engines.trt_engine",
    "engine_key_parts": "vidinv.engines.trt_engine",
    "engine_paths": "vidinv.engines.trt_engine",
    "verify_sidecar": "vidinv.engines.trt_engine",
    "write_sidecar": "vidinv.engines.trt_engine",
    "export_onnx": "vidinv.engines.onnx_export",
    "read_onnx_specs": "vidinv.engines.onnx_export",
    "GeneratorEngineSpec": "vidinv.engines.generator_export",
    "SynthesisModule": "vidinv.engines.generator_export",
    "SynthesisWithFeaturesModule": "vidinv.engines.generator_export",
    "export_generator": "vidinv.engines.generator_export",
    "load_generator_spec": "vidinv.engines.generator_export",
    "synthesis_features_specs": "vidinv.engines.generator_export",
    "synthesis_specs": "vidinv.engines.generator_export",
}

__all__ = [
    "BACKENDS",
    "EditRenderGraph",
    "EncoderGraph",
    "ModelEngines",
    "engine_for_module",
    "make_model_engines",
    "pipeline_profile",
    "Engine",
    "GeneratorEngineSpec",
    "OrtEngine",
    "SynthesisModule",
    "SynthesisWithFeaturesModule",
    "TensorSpec",
    "TorchEngine",
    "TrtEngine",
    "batch_profile",
    "build_engine",
    "create_engine",
    "engine_cache_key",
    "engine_key_parts",
    "engine_paths",
    "export_generator",
    "export_onnx",
    "load_generator_spec",
    "read_onnx_specs",
    "synthesis_features_specs",
    "synthesis_specs",
    "verify_sidecar",
    "write_sidecar",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vidinv.engines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
