"""Engines: torch / ONNX Runtime parity on tiny generators, export, cache keys, missing backends.

The two generator graphs are exported once per module (most of this file's run time); TensorRT
tests are marked ``gpu`` and skip without tensorrt and CUDA.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.skips import machine_skip, require
from vidinv.engines import (
    Engine,
    OrtEngine,
    SynthesisModule,
    SynthesisWithFeaturesModule,
    TensorSpec,
    TorchEngine,
    TrtEngine,
    batch_profile,
    create_engine,
    engine_cache_key,
    engine_key_parts,
    engine_paths,
    export_generator,
    export_onnx,
    load_generator_spec,
    read_onnx_specs,
    synthesis_features_specs,
    synthesis_specs,
    verify_sidecar,
    write_sidecar,
)
from vidinv.engines.trt_engine import check_profile, shape_fits_profile
from vidinv.errors import (
    BackendUnavailableError,
    CheckpointError,
    EngineMismatchError,
    InputFileError,
)
from vidinv.io_safety import write_atomically
from vidinv.models.stylegan2 import StyleGAN2Generator

K = 5
PARITY_TOLERANCE = 1e-4
FEATURES_GRAPH = f"synthesis_features_k{K}"


@pytest.fixture(scope="module")
def generator() -> StyleGAN2Generator:
    """32 px, channel_max 32, n_mlp 2, seeded random weights (biases and noise gains non-zero)."""
    torch.manual_seed(0)
    generator = StyleGAN2Generator(resolution=32, style_dim=512, n_mlp=2, channel_multiplier=2,
                                   channel_max=32).eval()
    with torch.no_grad():
        for param in generator.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return generator.requires_grad_(False)


@pytest.fixture(scope="module")
def onnx_files(generator: StyleGAN2Generator, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Path]:
    """Both generator graphs (each export is several seconds of torch.export tracing)."""
    return export_generator(generator, tmp_path_factory.mktemp("onnx"), k=K)


def _inputs(generator: StyleGAN2Generator, graph: str, batch: int, seed: int = 1
            ) -> dict[str, torch.Tensor]:
    ws = torch.randn(batch, generator.n_latent, 512, generator=torch.Generator().manual_seed(seed))
    if graph == "synthesis":
        return {"ws": ws}
    return {"ws": ws, "features": generator.features(ws, K)}


def _torch_module(generator: StyleGAN2Generator, graph: str) -> nn.Module:
    return SynthesisModule(generator) if graph == "synthesis" else \
        SynthesisWithFeaturesModule(generator, K)


# ---------------------------------------------------------------------------------------------
# Import hygiene
# ---------------------------------------------------------------------------------------------


def test_importing_engines_loads_no_backend() -> None:
    code = ("import sys, vidinv.engines as e; e.TensorSpec; e.create_engine; e.TrtEngine; "
            "e.OrtEngine; e.export_generator; "
            "print([m for m in ('onnx', 'onnxruntime', 'onnxscript', 'tensorrt') "
            "if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Generator export and ONNX Runtime parity
# ---------------------------------------------------------------------------------------------


def test_export_generator_writes_both_graphs(onnx_files: dict[str, Path]) -> None:
    assert {"synthesis", "synthesis_features"} <= set(load_generator_spec().graphs)
    assert sorted(onnx_files) == ["synthesis", FEATURES_GRAPH]
    assert [p.name for p in onnx_files.values()] == ["synthesis.onnx", f"{FEATURES_GRAPH}.onnx"]
    folder = onnx_files["synthesis"].parent  # nothing else, no temporary files left behind
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name
                                                              for p in onnx_files.values())


@pytest.mark.parametrize("graph", ["synthesis", FEATURES_GRAPH])
@pytest.mark.parametrize("batch", [1, 3])
def test_ort_matches_torch(generator: StyleGAN2Generator, onnx_files: dict[str, Path],
                           graph: str, batch: int) -> None:
    engine = OrtEngine(onnx_files[graph])
    inputs = _inputs(generator, graph, batch)
    with torch.inference_mode():
        expected = _torch_module(generator, graph)(**inputs)

    outputs = engine(**inputs)

    assert list(outputs) == ["image"]
    image = outputs["image"]
    assert image.shape == (batch, 3, 32, 32) and image.dtype == torch.float32
    error = (image - expected).abs().max().item()
    print(f"{graph} batch {batch}: max-abs ORT vs torch = {error:.2e}")
    assert error <= PARITY_TOLERANCE


def test_features_input_drives_the_features_graph(generator: StyleGAN2Generator,
                                                  onnx_files: dict[str, Path]) -> None:
    engine = OrtEngine(onnx_files[FEATURES_GRAPH])
    inputs = _inputs(generator, FEATURES_GRAPH, 2)
    edited = {**inputs, "features": inputs["features"] + torch.randn_like(inputs["features"])}
    with torch.inference_mode():
        expected = SynthesisWithFeaturesModule(generator, K)(**edited)

    original, changed = engine(**inputs)["image"], engine(**edited)["image"]

    assert (changed - original).abs().max().item() > 1e-2
    assert (changed - expected).abs().max().item() <= PARITY_TOLERANCE


def test_ort_specs_come_from_the_graph(generator: StyleGAN2Generator,
                                       onnx_files: dict[str, Path]) -> None:
    plain = OrtEngine(onnx_files["synthesis"])
    features = OrtEngine(onnx_files[FEATURES_GRAPH])

    assert (plain.input_specs, plain.output_specs) == synthesis_specs(generator)
    assert (features.input_specs, features.output_specs) == synthesis_features_specs(generator, K)
    assert features.input_specs[1] == TensorSpec("features", ("batch", 32, 16, 16), "float32")
    assert read_onnx_specs(onnx_files[FEATURES_GRAPH]) == synthesis_features_specs(generator, K)
    assert (plain.device, plain.precision) == ("cpu", "fp32")


def test_exported_weights_are_static_initializers(onnx_files: dict[str, Path]) -> None:
    import onnx

    model = onnx.load(str(onnx_files[FEATURES_GRAPH]))
    initializers = {init.name for init in model.graph.initializer}
    weighted = [node for node in model.graph.node
                if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    assert weighted
    assert all(node.input[1] in initializers for node in weighted)
    assert {entry.version for entry in model.opset_import if entry.domain == ""} == {18}


def test_torch_and_ort_engines_agree(generator: StyleGAN2Generator,
                                     onnx_files: dict[str, Path]) -> None:
    input_specs, output_specs = synthesis_features_specs(generator, K)
    engines = [
        create_engine("torch", module=SynthesisWithFeaturesModule(generator, K),
                      input_specs=input_specs, output_specs=output_specs),
        create_engine("onnx", onnx_path=onnx_files[FEATURES_GRAPH]),
    ]
    inputs = _inputs(generator, FEATURES_GRAPH, 2)

    results = [engine(**inputs) for engine in engines]

    assert all(isinstance(engine, Engine) for engine in engines)
    assert engines[0].input_specs == engines[1].input_specs
    assert engines[0].output_specs == engines[1].output_specs
    assert list(results[0]) == list(results[1]) == ["image"]
    assert (results[0]["image"] - results[1]["image"]).abs().max().item() <= PARITY_TOLERANCE


def test_engines_reject_inputs_that_do_not_fit_the_specs(generator: StyleGAN2Generator,
                                                         onnx_files: dict[str, Path]) -> None:
    engine = OrtEngine(onnx_files[FEATURES_GRAPH])
    ws = torch.zeros(2, generator.n_latent, 512)
    features = torch.zeros(2, 32, 16, 16)

    with pytest.raises(ValueError, match="missing"):
        engine(ws=ws)
    with pytest.raises(ValueError, match="features"):
        engine(ws=ws, features=torch.zeros(2, 32, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        engine(ws=ws, features=features[:1])


# ---------------------------------------------------------------------------------------------
# export_onnx on a small module
# ---------------------------------------------------------------------------------------------


class _Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 2.0


def test_failed_write_leaves_the_existing_file_untouched(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "synthesis.onnx"
    path.write_bytes(b"the previous, complete export")

    def interrupted(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, b"a new export that never lands")

    assert path.read_bytes() == b"the previous, complete export"
    assert [p.name for p in tmp_path.iterdir()] == ["synthesis.onnx"]


def test_export_onnx_checks_names_before_exporting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="forward"):
        export_onnx(_Affine(), {"ws": torch.randn(2, 4)}, ["y"], tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="neither inputs"):
        export_onnx(_Affine(), {"x": torch.randn(2, 4)}, ["y"], tmp_path / "a.onnx",
                    dynamic_axes={"z": {0: "batch"}})
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Missing backends and bad files
# ---------------------------------------------------------------------------------------------


def test_export_without_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'vidinv\[onnx\]'"):
        export_onnx(_Affine(), {"x": torch.randn(2, 4)}, ["y"], tmp_path / "a.onnx")


def test_ort_engine_without_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                        onnx_files: dict[str, Path]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'vidinv\[onnx\]'"):
        OrtEngine(onnx_files["synthesis"])
    with pytest.raises(BackendUnavailableError, match=r"vidinv\[onnx\]"):
        create_engine("onnx", onnx_path=onnx_files["synthesis"])


def test_trt_engine_without_tensorrt_names_the_extra_and_the_gpu(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    profile = {"ws": ((1, 8, 512), (1, 8, 512), (4, 8, 512))}
    for attempt in (
        lambda: TrtEngine.from_onnx(tmp_path / "g.onnx", tmp_path, profile),
        lambda: create_engine("tensorrt", onnx_path=tmp_path / "g.onnx", cache_dir=tmp_path,
                              profile=profile),
    ):
        with pytest.raises(BackendUnavailableError) as caught:
            attempt()
        assert "pip install 'vidinv[tensorrt]'" in str(caught.value)
        assert "NVIDIA GPU" in str(caught.value)


def test_ort_engine_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        OrtEngine(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a model")
    with pytest.raises(CheckpointError) as caught:
        OrtEngine(corrupt)
    assert "\n" not in str(caught.value) and "corrupt.onnx" in str(caught.value)


def test_ort_engine_refuses_an_unavailable_cuda_provider(onnx_files: dict[str, Path]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        machine_skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        OrtEngine(onnx_files["synthesis"], providers=["cuda"])


def test_torch_engine_refuses_fp16_on_cpu() -> None:
    spec = TensorSpec("x", ("batch", 4))
    with pytest.raises(BackendUnavailableError, match="fp16.*cuda"):
        TorchEngine(_Affine(), [spec], [TensorSpec("y", ("batch", 3))], precision="fp16")


def test_factory_rejects_unknown_backends_and_missing_arguments() -> None:
    with pytest.raises(BackendUnavailableError, match="torch, onnx, tensorrt"):
        create_engine("openvino", onnx_path="x.onnx")
    with pytest.raises(ValueError, match="onnx_path"):
        create_engine("onnx")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        create_engine("onnx", onnx_path="x.onnx", precision="fp16")


# ---------------------------------------------------------------------------------------------
# TensorRT cache key and sidecar (pure Python)
# ---------------------------------------------------------------------------------------------

_KEY_ARGS = {
    "onnx_bytes": b"onnx graph bytes",
    "profile": {"ws": ((1, 8, 512), (1, 8, 512), (8, 8, 512))},
    "precision": "fp16",
    "tensorrt_version": "10.3.0",
    "gpu_name": "NVIDIA GeForce RTX 4090",
    "compute_capability": (8, 9),
}


@pytest.mark.parametrize("part, value", [
    ("onnx_bytes", b"onnx graph bytes!"),
    ("profile", {"ws": ((1, 8, 512), (1, 8, 512), (16, 8, 512))}),
    ("profile", {"ws": ((1, 8, 512), (2, 8, 512), (8, 8, 512))}),
    ("profile", {"ws": ((1, 8, 512), (1, 8, 512), (8, 8, 512)),
                 "features": ((1, 32, 16, 16), (1, 32, 16, 16), (8, 32, 16, 16))}),
    ("precision", "fp32"),
    ("tensorrt_version", "10.4.0"),
    ("gpu_name", "NVIDIA H100 80GB HBM3"),
    ("compute_capability", (9, 0)),
])
def test_cache_key_changes_with_each_part(part: str, value: object) -> None:
    assert engine_cache_key(**{**_KEY_ARGS, part: value}) != engine_cache_key(**_KEY_ARGS)


def test_cache_key_is_stable_and_ignores_profile_order() -> None:
    profile = {"ws": ((1, 8, 512), (1, 8, 512), (8, 8, 512)),
               "features": ((1, 32, 16, 16), (1, 32, 16, 16), (8, 32, 16, 16))}
    reordered = dict(reversed(list(profile.items())))
    first = engine_cache_key(**{**_KEY_ARGS, "profile": profile})
    assert first == engine_cache_key(**{**_KEY_ARGS, "profile": reordered})
    assert len(first) == 64 and int(first, 16) >= 0


def test_sidecar_mismatch_raises_and_names_the_part(tmp_path: Path) -> None:
    engine, sidecar = engine_paths(tmp_path, "models/synthesis.onnx", "fp16")
    assert (engine.name, sidecar.name) == ("synthesis.fp16.engine", "synthesis.fp16.engine.json")
    engine.write_bytes(b"serialized engine")
    built_for = engine_key_parts(**_KEY_ARGS)
    write_sidecar(sidecar, built_for)

    verify_sidecar(engine, engine_key_parts(**_KEY_ARGS))  # same key: no error
    assert json.loads(sidecar.read_text())["key"] == built_for.key

    newer_trt = engine_key_parts(**{**_KEY_ARGS, "tensorrt_version": "10.4.0"})
    with pytest.raises(EngineMismatchError, match=r"tensorrt_version: 10\.3\.0 -> 10\.4\.0"):
        verify_sidecar(engine, newer_trt)
    other_onnx = engine_key_parts(**{**_KEY_ARGS, "onnx_bytes": b"re-exported"})
    with pytest.raises(EngineMismatchError, match="onnx_sha256") as caught:
        verify_sidecar(engine, other_onnx)
    assert "\n" not in str(caught.value) and "vidinv engines build --rebuild" in str(caught.value)


def test_missing_or_corrupt_sidecar_is_a_mismatch(tmp_path: Path) -> None:
    engine, sidecar = engine_paths(tmp_path, "synthesis.onnx", "fp16")
    engine.write_bytes(b"serialized engine")
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        verify_sidecar(engine, engine_key_parts(**_KEY_ARGS))
    sidecar.write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable"):
        verify_sidecar(engine, engine_key_parts(**_KEY_ARGS))


def test_batch_profile_and_profile_checks() -> None:
    specs = [TensorSpec("ws", ("batch", 8, 512)), TensorSpec("features", ("batch", 32, 16, 16))]
    profile = batch_profile(specs, 1, 2, 8)
    assert profile == {"ws": ((1, 8, 512), (2, 8, 512), (8, 8, 512)),
                       "features": ((1, 32, 16, 16), (2, 32, 16, 16), (8, 32, 16, 16))}
    check_profile(profile, {"ws": (-1, 8, 512), "features": (-1, 32, 16, 16)})
    with pytest.raises(ValueError, match="does not fit"):
        check_profile(profile, {"ws": (-1, 18, 512), "features": (-1, 32, 16, 16)})
    with pytest.raises(ValueError, match="inputs"):
        check_profile(profile, {"ws": (-1, 8, 512)})
    with pytest.raises(ValueError, match="min_batch"):
        batch_profile(specs, 4, 2, 8)
    assert shape_fits_profile((3, 8, 512), (1, 8, 512), (8, 8, 512))
    assert not shape_fits_profile((9, 8, 512), (1, 8, 512), (8, 8, 512))


def _spec_toml(data: dict) -> str:
    """``engines/generator.toml``'s tables written back as TOML (JSON's scalars and lists are
    TOML's)."""
    tables = [("export", data["export"]), *((f"graphs.{kind}", graph)
                                            for kind, graph in data["graphs"].items()),
              ("tensorrt", data["tensorrt"])]
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                              for key, value in values.items())
                      for name, values in tables)


def test_the_shipped_generator_spec_loads_with_values_the_backends_accept() -> None:
    onnx = require("onnx")
    spec = load_generator_spec()
    assert 7 <= spec.opset <= onnx.defs.onnx_opset_version()  # one the installed onnx knows
    assert spec.example_batch >= 1 and spec.tensorrt.max_batch >= 1
    assert spec.tensorrt.precision in ("fp16", "fp32")
    assert 0 <= spec.tensorrt.optimization_level <= 5 and spec.tensorrt.workspace_bytes > 0
    files = [graph.file_name(K) for graph in spec.graphs.values()]
    assert len(set(files)) == len(files) and all(f.endswith(".onnx") for f in files)
    # a graph whose file depends on the feature layer gets a name per layer
    assert spec.graphs["edit_render"].file_name(4) != spec.graphs["edit_render"].file_name(5)


def test_generator_spec_file_is_read_strictly(tmp_path: Path) -> None:
    """What a user's copy says is what the engines get; a bad key or value is named."""
    import tomllib

    from vidinv.engines.generator_export import DEFAULT_SPEC_PATH

    data = tomllib.loads(DEFAULT_SPEC_PATH.read_text())
    edited = copy.deepcopy(data)
    edited["export"].update(opset=17, example_batch=3)
    edited["graphs"]["encoder"]["file"] = "my_encoder_{k}.onnx"
    edited["tensorrt"].update(precision="fp32", max_batch=2, workspace_gib=0.5,
                              optimization_level=0)
    path = tmp_path / "generator.toml"
    path.write_text(_spec_toml(edited))
    spec = load_generator_spec(path)
    assert (spec.opset, spec.example_batch) == (17, 3)
    assert spec.graphs["encoder"].file_name(K) == f"my_encoder_{K}.onnx"
    assert (spec.tensorrt.precision, spec.tensorrt.max_batch, spec.tensorrt.optimization_level,
            spec.tensorrt.workspace_bytes) == ("fp32", 2, 0, 1 << 29)

    for table, key, value, named in (("tensorrt", "precision", "int8", "precision"),
                                     ("tensorrt", "optimization_level", 6, "optimization_level"),
                                     ("tensorrt", "max_batch", 0, "max_batch"),
                                     ("export", "opset", "18", "opset")):
        broken = copy.deepcopy(data)
        broken[table][key] = value
        path.write_text(_spec_toml(broken))
        with pytest.raises(InputFileError, match=named):
            load_generator_spec(path)
    path.write_text(DEFAULT_SPEC_PATH.read_text().replace("max_batch", "max_batchh"))
    with pytest.raises(InputFileError, match="max_batchh"):
        load_generator_spec(path)


# ---------------------------------------------------------------------------------------------
# GPU: TensorRT and torch fp16 (skipped without CUDA / tensorrt)
# ---------------------------------------------------------------------------------------------


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.mark.gpu
@pytest.mark.parametrize("graph", ["synthesis", FEATURES_GRAPH])
def test_trt_fp16_matches_torch_and_reloads_from_cache(
        generator: StyleGAN2Generator, onnx_files: dict[str, Path], tmp_path: Path,
        graph: str) -> None:
    pytest.importorskip("tensorrt")
    _require_cuda()
    input_specs, _ = read_onnx_specs(onnx_files[graph])
    profile = batch_profile(input_specs, 1, 1, 4)
    engine = create_engine("tensorrt", onnx_path=onnx_files[graph], cache_dir=tmp_path,
                           profile=profile)
    engine_file, _ = engine_paths(tmp_path, onnx_files[graph], "fp16", profile)
    built_at = engine_file.stat().st_mtime_ns
    module = copy.deepcopy(_torch_module(generator, graph)).cuda()  # fixture stays on CPU
    for batch in (1, 3):
        inputs = {name: t.cuda() for name, t in _inputs(generator, graph, batch).items()}
        with torch.inference_mode():
            expected = module(**inputs)
        image = engine(**inputs)["image"]
        assert image.device.type == "cuda" and image.dtype == torch.float32
        assert (image - expected).abs().max().item() <= 2e-2 * expected.abs().max().item()

    reloaded = create_engine("tensorrt", onnx_path=onnx_files[graph], cache_dir=tmp_path,
                             profile=profile)
    assert engine_file.stat().st_mtime_ns == built_at  # loaded, not rebuilt
    assert reloaded.input_specs == engine.input_specs

    # Another ONNX file under the same name: the cached engine is refused, not reused.
    other = tmp_path / "other" / onnx_files[graph].name
    other.parent.mkdir()
    other.write_bytes(onnx_files[graph].read_bytes() + b"\n")
    with pytest.raises(EngineMismatchError, match="onnx_sha256"):
        TrtEngine(engine_file, onnx_path=other, profile=profile)


@pytest.mark.gpu
def test_torch_engine_fp16_on_cuda_is_close_to_fp32(generator: StyleGAN2Generator) -> None:
    _require_cuda()
    input_specs, output_specs = synthesis_specs(generator)
    half = TorchEngine(SynthesisModule(generator), input_specs, output_specs, device="cuda",
                       precision="fp16")
    inputs = _inputs(generator, "synthesis", 2)
    with torch.inference_mode():
        expected = SynthesisModule(generator)(**inputs)

    image = half(**inputs)["image"]

    assert image.dtype == torch.float32 and image.device.type == "cuda"
    assert next(generator.parameters()).device.type == "cpu"  # caller's module untouched
    assert (image.cpu() - expected).abs().max().item() <= 2e-2 * expected.abs().max().item()


# --- TorchEngine's traced graphs (CPU) ----------------------------------------------------


class _Noisy(nn.Module):
    """Draws new noise on every call: no trace can give the module's outputs back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)


def test_torch_engine_runs_a_checked_trace_per_shape_and_smaller_batches_eagerly():
    from vidinv.engines.torch_engine import TorchEngine

    torch.manual_seed(0)
    module = _Affine()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    traced = TorchEngine(module, *specs)
    eager = TorchEngine(module, *specs, trace=False)
    assert traced.trace and not eager.trace
    x = torch.randn(4, 4)
    assert torch.allclose(traced(x=x)["y"], eager(x=x)["y"], atol=1e-6)
    assert len(traced.traced_shapes) == 1
    # a smaller batch (a clip's last) runs eagerly: no second trace
    small = traced(x=x[:3])["y"]
    assert small.shape == (3, 3)
    assert torch.allclose(small, eager(x=x[:3])["y"], atol=1e-6)
    assert len(traced.traced_shapes) == 1
    # a larger batch gets its own trace
    traced(x=torch.randn(6, 4))
    assert len(traced.traced_shapes) == 2


def _eager_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "vidinv.engines.torch_engine" and r.levelname == "WARNING"]


def test_torch_engine_runs_eagerly_and_warns_when_the_trace_does_not_match_the_module(caplog):
    from vidinv.engines.torch_engine import TorchEngine

    engine = TorchEngine(_Noisy(), [TensorSpec("x", ("batch", 64))],
                         [TensorSpec("y", ("batch", 64))], name="noisy")
    x = torch.zeros(2, 64)
    with caplog.at_level("WARNING", logger="vidinv.engines.torch_engine"):
        first, second = engine(x=x)["y"], engine(x=x)["y"]
    assert engine.traced_shapes == []  # the check at trace time refused the trace
    assert not torch.equal(first, second)  # the module itself ran: fresh noise each call
    [warning] = _eager_warnings(caplog)  # one line, once for the shape, at its first call
    assert "\n" not in warning and warning.startswith("noisy: its trace differs")
    assert "x (2, 64)" in warning and "runs eagerly" in warning


class _Untraceable(nn.Module):
    """Refuses to be traced, with a message of several lines (as the tracer's own are)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("cannot trace this\nsecond line of the tracer's story")
        return x * 2


def test_torch_engine_warns_in_one_line_when_the_module_cannot_be_traced(caplog):
    from vidinv.engines.torch_engine import TorchEngine

    engine = TorchEngine(_Untraceable(), [TensorSpec("x", ("batch", 4))],
                         [TensorSpec("y", ("batch", 4))], name="untraceable")
    with caplog.at_level("WARNING", logger="vidinv.engines.torch_engine"):
        y = engine(x=torch.ones(3, 4))["y"]
        engine(x=torch.ones(3, 4))
    assert torch.equal(y, torch.full((3, 4), 2.0)) and engine.traced_shapes == []
    assert _eager_warnings(caplog) == [
        "untraceable: cannot be traced (cannot trace this) for x (3, 4); it runs eagerly, many "
        "times slower while other threads run"]


def test_torch_engine_that_traces_says_nothing(caplog):
    from vidinv.engines.torch_engine import TorchEngine

    engine = TorchEngine(_Affine(), [TensorSpec("x", ("batch", 4))],
                         [TensorSpec("y", ("batch", 3))])
    with caplog.at_level("WARNING", logger="vidinv.engines.torch_engine"):
        engine(x=torch.randn(2, 4))
    assert len(engine.traced_shapes) == 1 and _eager_warnings(caplog) == []


def _no_tracing(*args, **kwargs):
    raise AssertionError("traced although the trace cache holds this graph")


def test_torch_engine_keeps_its_trace_and_a_later_engine_loads_it(tmp_path, monkeypatch):
    """With a trace cache, the first engine saves its graph under a key of what it was made
    from; a new engine of the same module and shape loads it without tracing and gives the
    module's outputs; other weights or another shape are another key, traced anew."""
    from vidinv.engines.torch_engine import TorchEngine, trace_key

    torch.manual_seed(0)
    module = _Affine()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    cache = tmp_path / "traces"
    x = torch.randn(4, 4)
    first = TorchEngine(module, *specs, trace_cache=cache)(x=x)["y"]
    [saved] = cache.glob("*.pt")
    assert saved.name == f"{trace_key(module.eval(), {'x': x}, ['y'])}.pt"
    assert not list(cache.glob(".*"))  # no part file left beside it

    with monkeypatch.context() as patch:
        patch.setattr(torch.jit, "trace", _no_tracing)
        # the key the file carries proves what it was made from: the module is not run again
        patch.setattr(_Affine, "forward", _no_tracing)
        again = TorchEngine(module, *specs, trace_cache=cache)
        y = again(x=x)["y"]
    assert len(again.traced_shapes) == 1 and torch.allclose(y, first, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(y, module(x), atol=1e-6)

    changed = _Affine()  # other weights: its own key and graph, never the saved one
    with torch.no_grad():
        changed.linear.weight.add_(1.0)
    out = TorchEngine(changed, *specs, trace_cache=cache)(x=x)["y"]
    with torch.no_grad():
        assert torch.allclose(out, changed(x), atol=1e-6)
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.randn(6, 4))  # another shape
    assert len(list(cache.glob("*.pt"))) == 3


class _MaybeTwo(nn.Module):
    """The same weights, one or two outputs by a flag (as the edit+render graph with or
    without the reconstruction)."""

    def __init__(self, both: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.linear = nn.Linear(4, 3)
        self.both = both

    def forward(self, x: torch.Tensor):
        y = self.linear(x)
        return (y, y * 3.0) if self.both else y


def test_one_graph_class_with_other_outputs_is_another_saved_trace(tmp_path):
    from vidinv.engines.torch_engine import TorchEngine

    cache, x = tmp_path / "traces", torch.randn(2, 4)
    one = TorchEngine(_MaybeTwo(False), [TensorSpec("x", ("batch", 4))],
                      [TensorSpec("y", ("batch", 3))], trace_cache=cache)
    two = TorchEngine(_MaybeTwo(True), [TensorSpec("x", ("batch", 4))],
                      [TensorSpec("y", ("batch", 3)), TensorSpec("z", ("batch", 3))],
                      trace_cache=cache)
    first, second = one(x=x), two(x=x)
    assert set(first) == {"y"} and set(second) == {"y", "z"}
    assert torch.allclose(second["z"], 3.0 * first["y"], atol=1e-5)
    assert len(list(cache.glob("*.pt"))) == 2
    again = TorchEngine(_MaybeTwo(True), [TensorSpec("x", ("batch", 4))],
                        [TensorSpec("y", ("batch", 3)), TensorSpec("z", ("batch", 3))],
                        trace_cache=cache)
    assert torch.equal(again(x=x)["z"], second["z"])


def test_torch_engine_traces_anew_over_a_saved_trace_that_is_broken_or_wrong(tmp_path):
    """A cached file that does not load, that is another graph put under this key by hand
    (it carries its own key), or that carries no key (a trace saved without one) is not
    used: the module is traced again and the file replaced by one that carries this key."""
    from vidinv.engines.torch_engine import TRACE_KEY_FILE, TorchEngine, trace_key

    torch.manual_seed(1)
    module, other = _Affine(), _Affine()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    cache = tmp_path / "traces"
    x = torch.randn(2, 4)
    key = trace_key(module.eval(), {'x': x}, ['y'])
    path = cache / f"{key}.pt"
    with torch.no_grad():
        expected = module(x)

    def carried_key() -> str:
        carried = {TRACE_KEY_FILE: ""}
        torch.jit.load(str(path), _extra_files=carried)
        value = carried[TRACE_KEY_FILE]
        return value.decode() if isinstance(value, bytes) else value

    cache.mkdir()
    path.write_bytes(b"half a zip file")
    assert torch.allclose(TorchEngine(module, *specs, trace_cache=cache)(x=x)["y"], expected,
                          atol=1e-6)
    assert carried_key() == key  # replaced by a good one

    other_engine = TorchEngine(other, *specs, trace_cache=tmp_path / "other")
    other_engine(x=x)
    [wrong] = (tmp_path / "other").glob("*.pt")
    wrong.replace(path)  # another module's graph under this module's key
    engine = TorchEngine(module, *specs, trace_cache=cache)
    assert torch.allclose(engine(x=x)["y"], expected, atol=1e-6)
    assert len(engine.traced_shapes) == 1 and carried_key() == key

    with torch.no_grad():  # the other module's graph saved without a key, under this name
        torch.jit.save(torch.jit.trace(other.eval(), x), str(path))
    engine = TorchEngine(module, *specs, trace_cache=cache)
    assert torch.allclose(engine(x=x)["y"], expected, atol=1e-6)
    assert carried_key() == key


def test_two_engines_saving_one_trace_at_once_leave_one_good_file(tmp_path, monkeypatch):
    """A preview and a render of one model may trace the same key at the same time: each
    writes its own part file (never both into one) and renames it, so the cache ends with one
    whole graph and no part file."""
    import threading
    import time

    from vidinv.engines.torch_engine import TorchEngine

    real_save, written = torch.jit.save, []
    both_saving = threading.Barrier(2, timeout=30)

    def slow_save(graph, path, **options):  # both writers inside a save at once
        written.append(path)
        real_save(graph, path, **options)
        both_saving.wait()
        time.sleep(0.05)

    monkeypatch.setattr(torch.jit, "save", slow_save)
    module = _Affine()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    cache = tmp_path / "traces"
    x = torch.randn(4, 4)
    outputs = []
    threads = [threading.Thread(target=lambda: outputs.append(
        TorchEngine(module, *specs, trace_cache=cache)(x=x)["y"])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(written) == 2 and written[0] != written[1]
    with torch.no_grad():
        expected = module(x)
    assert len(outputs) == 2 and all(torch.allclose(y, expected, atol=1e-6) for y in outputs)
    [saved] = cache.glob("*.pt")
    assert sorted(p.name for p in cache.iterdir()) == [saved.name]  # no part file left
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(saved))(x), expected, atol=1e-6)


def test_torch_engine_runs_when_its_trace_cache_cannot_be_written(tmp_path, caplog):
    """A trace cache that cannot be written (here a file where the folder should be) costs the
    time to trace, nothing else: no error, no warning, the traced graph runs."""
    from vidinv.engines.torch_engine import TorchEngine

    blocked = tmp_path / "traces"
    blocked.write_text("a file, not a folder")
    engine = TorchEngine(_Affine(), [TensorSpec("x", ("batch", 4))],
                         [TensorSpec("y", ("batch", 3))], trace_cache=blocked)
    with caplog.at_level("WARNING", logger="vidinv.engines.torch_engine"):
        engine(x=torch.randn(2, 4))
    assert len(engine.traced_shapes) == 1 and _eager_warnings(caplog) == []
    assert blocked.read_text() == "a file, not a folder"


def test_torch_engine_trace_cache_keeps_the_most_recently_used(tmp_path, monkeypatch):
    """A save cuts the folder to TRACES_KEPT graphs: the ones used last (loading one counts as
    a use) stay."""
    from vidinv.engines import torch_engine
    from vidinv.engines.torch_engine import TorchEngine, trace_key

    monkeypatch.setattr(torch_engine, "TRACES_KEPT", 2)
    cache = tmp_path / "traces"
    module = _Affine().eval()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    paths = {batch: cache / f"{trace_key(module, {'x': torch.zeros(batch, 4)}, ['y'])}.pt"
             for batch in (1, 2, 3)}
    for batch in (1, 2):
        TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(batch, 4))
    for batch, age in ((1, 300), (2, 200)):  # batch 1 saved first, batch 2 after it
        os.utime(paths[batch], (paths[batch].stat().st_mtime - age,) * 2)
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(1, 4))  # batch 1 used again
    mine = cache / "my_checkpoint.pt"  # not a trace: never the cache's to remove
    mine.write_bytes(b"a user's file")
    os.utime(mine, (0, 0))
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(3, 4))  # a third: one goes
    assert sorted(cache.glob("*.pt")) == sorted([paths[1], paths[3], mine])


def test_torch_engine_trace_cache_stays_within_its_bytes(tmp_path, monkeypatch):
    """Graphs hold their weights: past TRACE_CACHE_BYTES the ones used longest ago go, the one
    just saved stays (even alone over the budget)."""
    from vidinv.engines import torch_engine
    from vidinv.engines.torch_engine import TorchEngine

    cache = tmp_path / "traces"
    module = _Affine()
    specs = ([TensorSpec("x", ("batch", 4))], [TensorSpec("y", ("batch", 3))])
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(1, 4))
    [first] = cache.glob("*.pt")
    os.utime(first, (first.stat().st_mtime - 100,) * 2)
    monkeypatch.setattr(torch_engine, "TRACE_CACHE_BYTES", first.stat().st_size + 10)
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(2, 4))
    [second] = cache.glob("*.pt")
    assert second != first
    monkeypatch.setattr(torch_engine, "TRACE_CACHE_BYTES", 1)
    TorchEngine(module, *specs, trace_cache=cache)(x=torch.zeros(3, 4))
    [third] = cache.glob("*.pt")
    assert third not in (first, second)


def test_torch_engine_traces_a_channels_last_copy_and_leaves_the_module_alone():
    """The CPU trace is made from a channels_last copy (oneDNN's faster layout): same outputs
    as the module to float tolerance, and the caller's module keeps its own layout."""
    from vidinv.engines.torch_engine import TorchEngine

    class TwoConvs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.LeakyReLU(0.2),
                                       nn.Conv2d(16, 3, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.convs(x)

    torch.manual_seed(0)
    module = TwoConvs().eval()
    specs = ([TensorSpec("x", ("batch", 8, 20, 20))], [TensorSpec("y", ("batch", 3, 20, 20))])
    engine = TorchEngine(module, *specs)
    x = torch.randn(2, 8, 20, 20)
    out = engine(x=x)["y"]
    assert len(engine.traced_shapes) == 1  # the traced graph ran
    with torch.no_grad():
        expected = module(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert all(p.is_contiguous() for p in module.parameters())  # not channels_last
    assert not module.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
