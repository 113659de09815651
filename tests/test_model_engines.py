"""The pipeline's engines: the one-graph edit+render, the factory that alone makes engines
(backend, export cache, TensorRT profile), and the TensorRT defects a GPU would show.

CPU tests run the torch and ONNX Runtime backends on a tiny random model; GPU tests (marked
``gpu``) compare fp16 with fp32 on torch CUDA and TensorRT and skip without them.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.model_fixtures import make_tiny_model
from tests.skips import machine_skip
from vidinv.engines.factory import default_device, default_precision, engine_for_module
from vidinv.engines.model_graphs import (
    EditRenderGraph,
    edit_render_specs,
    make_model_engines,
)
from vidinv.engines.trt_engine import (
    check_tensorrt_version,
    engine_paths,
    pipeline_profile,
    timing_cache_path,
)
from vidinv.errors import BackendUnavailableError
from vidinv.latent.directions import load_direction
from vidinv.latent.editing import LatentEditor
from vidinv.models.folder import ModelBundle, load_model_bundle, resolve_model_folder

#: fp32 ONNX Runtime vs torch on the tiny model (measured ~6e-6)
ORT_TOLERANCE = 1e-4
#: fp16 vs fp32, relative to the fp32 image's largest magnitude
FP16_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return load_model_bundle(make_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def ort_engines(bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory):
    """ONNX Runtime engines with the reconstruction output, batch 3 (one export, ~20 s)."""
    cache = tmp_path_factory.mktemp("engines")
    return make_model_engines(bundle.generator, bundle.encoder, backend="onnx", batch_size=3,
                              with_reconstruction=True, cache_dir=cache), cache


@pytest.mark.parametrize("with_reconstruction", [False, True], ids=["edit", "transfer"])
def test_the_embedded_models_graphs_are_traced_when_the_pipeline_makes_its_engines(
        with_reconstruction: bool, caplog: pytest.LogCaptureFixture) -> None:
    """An eager graph is many times slower beside the pipeline's threads: the encoder and the
    edit+render graph of the shipped model must trace, at the pipeline's batch size."""
    from vidinv.config import PipelineConfig
    from vidinv.engines.model_graphs import engines_for_bundle as make_pipeline_engines

    config = PipelineConfig()
    assert config.engine.backend == "torch"
    if default_device("torch") != "cpu":
        machine_skip("torch sees a GPU: the pipeline's engines run on CUDA, untraced")
    embedded = load_model_bundle(resolve_model_folder(None))
    with caplog.at_level("WARNING", logger="vidinv.engines.torch_engine"):
        engines = make_pipeline_engines(embedded, config.engine,
                                        with_reconstruction=with_reconstruction)
    assert not [r for r in caplog.records if r.name == "vidinv.engines.torch_engine"]
    batch = config.engine.batch_size
    for engine in (engines.encoder_engine, engines.edit_render_engine):
        assert engine.trace, engine
        # traced when made, for the batch the pipeline sends (every input's leading dim)
        assert [{shape[0] for _, shape in key} for key in engine.traced_shapes] == [{batch}]


def _smile(bundle: ModelBundle, strength: float) -> LatentEditor:
    direction = load_direction(bundle.directions_folder / "smile.safetensors", "smile",
                               bundle.generator)
    return LatentEditor(bundle.generator, direction, strength, k=bundle.k, check=False)


def _inputs(bundle: ModelBundle, batch: int, seed: int = 3):
    seed_gen = torch.Generator().manual_seed(seed)
    size = bundle.encoder.input_size
    images = torch.rand(batch, 3, size, size, generator=seed_gen) * 2 - 1
    with torch.no_grad():
        w, features = bundle.encoder(images)
    return images, w, features


# --- the graph ------------------------------------------------------------------------------


def test_edit_render_graph_is_eq1_and_renders_the_reconstruction_in_the_same_batch(
        bundle: ModelBundle) -> None:
    _, w, features = _inputs(bundle, 3)
    editor = _smile(bundle, 2.0)
    offset = (editor.offset * editor.strength).expand_as(w)
    graph = EditRenderGraph(bundle.generator, bundle.k, with_reconstruction=True)
    with torch.no_grad():
        edited, reconstruction = graph(w, features, offset)
        expected_edit = editor.render(w, features)
        expected_reconstruction = bundle.generator.synthesis(w, features=features, k=bundle.k)
        plain = EditRenderGraph(bundle.generator, bundle.k)(w, features, offset)
        unedited, _ = graph(w, features, torch.zeros_like(w))
    torch.testing.assert_close(edited, expected_edit, rtol=0, atol=1e-5)
    torch.testing.assert_close(reconstruction, expected_reconstruction, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, edited, rtol=0, atol=1e-5)
    torch.testing.assert_close(unedited, expected_reconstruction, rtol=0, atol=1e-5)
    assert (edited - reconstruction).abs().max() > 0.1  # the edit did something


def test_per_sample_offsets_edit_each_sample_on_its_own(bundle: ModelBundle) -> None:
    """offset is [B,L,512]: several attributes summed, or a strength per sample."""
    _, w, features = _inputs(bundle, 2)
    editor = _smile(bundle, 1.0)
    offset = torch.stack([editor.offset * 3.0, torch.zeros_like(editor.offset)])
    graph = EditRenderGraph(bundle.generator, bundle.k)
    with torch.no_grad():
        images = graph(w, features, offset)
        alone = graph(w[:1], features[:1], offset[:1])
    torch.testing.assert_close(images[:1], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        images[1], bundle.generator.synthesis(w[1:], features=features[1:], k=bundle.k)[0],
        rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_edit_render_matches_torch(bundle: ModelBundle, ort_engines,
                                                batch: int) -> None:
    engines, _ = ort_engines
    reference = make_model_engines(bundle.generator, bundle.encoder, backend="torch",
                                   batch_size=3, with_reconstruction=True)
    images, _, _ = _inputs(bundle, batch)
    w, features = engines.encode(images)
    w_ref, features_ref = reference.encode(images)
    torch.testing.assert_close(w, w_ref, rtol=0, atol=ORT_TOLERANCE)
    torch.testing.assert_close(features, features_ref, rtol=0, atol=ORT_TOLERANCE)
    offset = (_smile(bundle, 2.0).offset * 2.0).expand_as(w)
    edited, reconstruction = engines.edit_render(w, features, offset)
    edited_ref, reconstruction_ref = reference.edit_render(w, features, offset)
    assert edited.shape == (batch, 3, 32, 32) and reconstruction is not None
    torch.testing.assert_close(edited, edited_ref, rtol=0, atol=ORT_TOLERANCE)
    torch.testing.assert_close(reconstruction, reconstruction_ref, rtol=0, atol=ORT_TOLERANCE)


def test_onnx_files_are_exported_once_into_the_cache_folder_given(bundle: ModelBundle,
                                                                  ort_engines) -> None:
    _, cache = ort_engines
    names = sorted(p.name for p in cache.iterdir())
    assert [re.sub(r"\.[0-9a-f]{12}\.", ".KEY.", name) for name in names] == [
        "edit_render_reconstruction_k5.KEY.onnx", "encoder.KEY.onnx"]
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = make_model_engines(bundle.generator, bundle.encoder, backend="onnx", batch_size=1,
                               with_reconstruction=True, cache_dir=cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps  # reused
    assert again.edit_render_engine.device == "cpu"


def test_onnx_backend_needs_a_cache_folder(bundle: ModelBundle) -> None:
    with pytest.raises(ValueError, match="cache_dir"):
        engine_for_module(EditRenderGraph(bundle.generator), edit_render_specs(bundle.generator),
                          {}, "x.onnx", backend="onnx")


# --- backend, device, precision, profile ---------------------------------------------------


def test_device_and_precision_default_to_the_backends_choice() -> None:
    assert default_device("tensorrt") == "cuda"
    cpu_or_cuda = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device("torch") == cpu_or_cuda
    assert default_precision("torch") == default_precision("onnx") == "fp32"
    assert default_precision("tensorrt") == "fp16"  # the shipped spec's
    with pytest.raises(BackendUnavailableError, match="torch, onnx, tensorrt"):
        default_device("openvino")


def test_tensorrt_without_a_device_is_not_sent_to_the_cpu(bundle: ModelBundle,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """--backend tensorrt alone: the device is the backend's (cuda), so the only complaint on a
    machine without TensorRT is the missing extra, never 'use device=cuda'."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError) as caught:
        make_model_engines(bundle.generator, bundle.encoder, backend="tensorrt",
                           cache_dir=tmp_path)
    assert "vidinv[tensorrt]" in str(caught.value) and "device=" not in str(caught.value)


def test_profile_follows_the_pipeline_batch_size() -> None:
    specs, _ = edit_render_specs(types.SimpleNamespace(
        n_latent=8, style_dim=512, resolution=32,
        synthesis=types.SimpleNamespace(feature_shape=lambda k: (16, 16, 16))))
    profile = pipeline_profile(specs, 4, 8)
    assert profile["w"] == ((1, 8, 512), (4, 8, 512), (8, 8, 512))
    assert profile["features"] == ((1, 16, 16, 16), (4, 16, 16, 16), (8, 16, 16, 16))
    assert pipeline_profile(specs, 12, 8)["offset"][1:] == ((12, 8, 512), (12, 8, 512))
    with pytest.raises(ValueError, match="at least 1"):
        pipeline_profile(specs, 0, 8)
    # engines for different batch sizes live side by side in one cache folder
    four, _ = engine_paths("c", "edit_render_k5.onnx", "fp16", profile)
    assert four.name == "edit_render_k5.fp16.b1-4-8.engine"
    assert engine_paths("c", "edit_render_k5.onnx", "fp16",
                        pipeline_profile(specs, 1, 8))[0] != four
    assert timing_cache_path("c", "10.8.0", "NVIDIA H100 80GB HBM3").name == \
        "timing.10.8.0.NVIDIA_H100_80GB_HBM3.cache"


def test_tensorrt_11_is_refused_with_the_pin_to_install(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    check_tensorrt_version("10.13.3.9")
    for version, needle in (("11.0.0", "tensorrt-cu13>=10.13.2,<11"), ("8.6.1", "too old")):
        with pytest.raises(BackendUnavailableError, match=needle.replace("+", r"\+")):
            check_tensorrt_version(version)
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "11.1.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    from vidinv.engines.factory import create_engine

    with pytest.raises(BackendUnavailableError, match="TensorRT 11"):
        create_engine("tensorrt", onnx_path=tmp_path / "g.onnx", cache_dir=tmp_path,
                      profile={"ws": ((1, 8, 512),) * 3})


def test_pyproject_pins_tensorrt_below_11() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pins = [req for req in pyproject["project"]["optional-dependencies"]["tensorrt"]
            if req.startswith("tensorrt")]
    assert pins and all("<11" in req for req in pins), pins


# --- engines build writes what edit reads ---------------------------------------------------


def test_engines_build_fills_the_cache_edit_reads(bundle: ModelBundle, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from vidinv.config import PipelineConfig
    from vidinv.engines.model_graphs import engines_for_bundle
    from vidinv.models.folder import engine_cache_folder

    env = {**os.environ, "VIDINV_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "vidinv.cli", "engines", "build", "--model",
               str(bundle.folder), "--batch", "2"]
    result = subprocess.run([*command, "--backend", "onnx", "--set", "face.paste=render"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("VIDINV_CACHE", str(tmp_path / "cache"))
    folder = engine_cache_folder(bundle)
    assert str(folder) in result.stdout
    built = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert [name.split(".")[0] for name in sorted(built)] == ["edit_render_k5", "encoder"]
    config = PipelineConfig().with_overrides(["engine.backend=onnx", "face.paste=render"])
    engines_for_bundle(bundle, config.engine)  # what `edit` does: nothing new is exported
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == built

    if importlib.util.find_spec("tensorrt") is None:  # without TensorRT: one line, the extra
        trt = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert trt.returncode == 2 and "Traceback" not in trt.stderr
        assert "vidinv[tensorrt]" in trt.stderr or "GPU" in trt.stderr


# --- GPU: fp16 vs fp32 --------------------------------------------------------------------


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


def _close(half: torch.Tensor, full: torch.Tensor) -> None:
    scale = full.abs().max().item()
    assert (half.float().cpu() - full.float().cpu()).abs().max().item() <= FP16_TOLERANCE * scale


@pytest.mark.gpu
def test_torch_cuda_fp16_edit_render_matches_fp32(bundle: ModelBundle) -> None:
    _require_cuda()
    full = make_model_engines(bundle.generator, bundle.encoder, backend="torch", device="cuda",
                              precision="fp32", with_reconstruction=True)
    half = make_model_engines(bundle.generator, bundle.encoder, backend="torch", device="cuda",
                              precision="fp16", with_reconstruction=True)
    images, _, _ = _inputs(bundle, 4)
    w, features = full.encode(images)
    assert w.device.type == "cuda"  # codes stay on the device between encode and render
    w_half, features_half = half.encode(images)
    _close(w_half, w)
    _close(features_half, features)
    offset = (_smile(bundle, 2.0).offset * 2.0).to(w).expand_as(w)
    for out_half, out_full in zip(half.edit_render(w, features, offset),
                                  full.edit_render(w, features, offset), strict=True):
        _close(out_half, out_full)


@pytest.mark.gpu
def test_tensorrt_fp16_edit_render_matches_fp32_and_loads_from_cache(
        bundle: ModelBundle, tmp_path: Path) -> None:
    _require_cuda()
    pytest.importorskip("tensorrt")
    full = make_model_engines(bundle.generator, bundle.encoder, backend="torch", device="cuda",
                              with_reconstruction=True, batch_size=4)
    trt = make_model_engines(bundle.generator, bundle.encoder, backend="tensorrt",
                             with_reconstruction=True, batch_size=4, cache_dir=tmp_path)
    engines = sorted(tmp_path.glob("*.engine"))
    assert [p.name for p in engines] == ["edit_render_reconstruction_k5.fp16.b1-4-8.engine",
                                         "encoder.fp16.b1-4-8.engine"]
    assert list(tmp_path.glob("timing.*.cache"))
    for batch in (1, 4):
        images, _, _ = _inputs(bundle, batch)
        w, features = full.encode(images)
        w_trt, features_trt = trt.encode(images)
        _close(w_trt, w)
        offset = (_smile(bundle, 2.0).offset * 2.0).to(w).expand_as(w)
        for out_trt, out_full in zip(trt.edit_render(w, features, offset),
                                     full.edit_render(w, features, offset), strict=True):
            assert out_trt.device.type == "cuda"
            _close(out_trt, out_full)
    stamps = {p: p.stat().st_mtime_ns for p in engines}
    make_model_engines(bundle.generator, bundle.encoder, backend="tensorrt",
                       with_reconstruction=True, batch_size=4, cache_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in engines} == stamps  # loaded, not rebuilt


def test_thread_budget_reaches_onnx_runtime(bundle: ModelBundle, ort_engines) -> None:
    """engine.threads (default 1): the stages run in parallel, so one CPU thread per call
    (torch's pool is set by the pipeline while it runs; ONNX Runtime's per session)."""
    from vidinv.config import EngineSettings

    assert EngineSettings().threads == 1
    _, cache = ort_engines
    onnx = make_model_engines(bundle.generator, bundle.encoder, backend="onnx", threads=1,
                              with_reconstruction=True, cache_dir=cache)
    options = onnx.encoder_engine._session.get_session_options()
    assert options.intra_op_num_threads == 1
