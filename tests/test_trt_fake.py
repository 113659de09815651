"""The real ``build_engine`` and ``TrtEngine.__call__`` against a checking fake of TensorRT 10
and ``torch.cuda`` (tests/fake_tensorrt.py), on every CI run without a GPU.

The fake runs the ONNX graph in ONNX Runtime from the buffers vidinv binds, so the outputs are
compared with torch; and it raises on the contracts real TensorRT would not check (alignment,
dtypes, shapes before outputs, the stream). The last tests break a call on purpose and see the
fake refuse it, so a passing run means something.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests import fake_tensorrt
from tests.fake_tensorrt import ContractViolation
from vidinv.engines.onnx_export import export_onnx, read_onnx_specs
from vidinv.engines.trt_engine import (
    TrtEngine,
    batch_profile,
    build_engine,
    check_cuda_stack,
    engine_paths,
    import_tensorrt,
    tensorrt_cuda_majors,
)
from vidinv.errors import BackendUnavailableError, EngineMismatchError


class _Net(nn.Module):
    """x [B,3,8,8] -> (y [B,4,8,8], pooled [B,4]): a conv, a transposed conv, a reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.nn.functional.leaky_relu(self.conv(x), 0.2)
        return y, self.up(y).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return _Net().eval()


@pytest.fixture(scope="module")
def onnx_file(net: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    return export_onnx(net, {"x": torch.randn(2, 3, 8, 8)}, ["y", "pooled"], path,
                       dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"},
                                     "pooled": {0: "batch"}})


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch):
    return fake_tensorrt.install(monkeypatch)


def _profile(onnx_file: Path):
    return batch_profile(read_onnx_specs(onnx_file)[0], 1, 2, 4)


def _expected(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return net(x)


# --- build ------------------------------------------------------------------------------------


def test_build_engine_makes_the_calls_trt10_needs(fakes, onnx_file: Path, tmp_path: Path
                                                  ) -> None:
    trt, cuda = fakes
    profile = _profile(onnx_file)
    path = build_engine(onnx_file, tmp_path, profile, "fp16", workspace_bytes=1 << 28,
                        optimization_level=2)
    assert path.name == "net.fp16.b1-2-4.trt10.16.1.11.sm90.engine"
    assert ("create_network", 0) in trt.calls  # explicit batch, weakly typed
    assert ("build", True, 1 << 28, 2) in trt.calls  # FP16 flag, workspace pool, level
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["parts"]["compute_capability"] == "9.0"
    assert sidecar["parts"]["profile"] == {"x": [[1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8]]}
    timing = sorted(tmp_path.glob("timing.*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes().startswith(b"FAKETC")


def test_a_profile_that_does_not_fit_the_network_is_refused_before_the_build(
        fakes, onnx_file: Path, tmp_path: Path) -> None:
    bad = {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 9, 9))}
    with pytest.raises(ValueError, match="does not fit"):
        build_engine(onnx_file, tmp_path, bad)
    assert not list(tmp_path.glob("*.engine"))


# --- run --------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_trt_engine_call_gives_the_networks_outputs(fakes, net: nn.Module, onnx_file: Path,
                                                    tmp_path: Path, precision: str,
                                                    tolerance: float) -> None:
    _, cuda = fakes
    engine = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), precision)
    for batch in (1, 3, 4):
        x = torch.randn(batch, 3, 8, 8)
        out = engine(x=x)
        y, pooled = _expected(net, x)
        assert out["y"].shape == y.shape and out["y"].dtype == torch.float32
        assert (out["y"] - y).abs().max() <= tolerance * y.abs().max()
        assert (out["pooled"] - pooled).abs().max() <= tolerance * y.abs().max()
        # the caller's stream waited for the engine's before anything reads the outputs
        cuda.check_ready(cuda.current_stream(), engine._stream.cuda_stream)
    if precision == "fp16":
        assert not torch.equal(out["y"], y)  # the fake rounds through half precision


def test_trt_engine_orders_its_stream_with_the_callers(fakes, onnx_file: Path,
                                                       tmp_path: Path) -> None:
    _, cuda = fakes
    engine = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    cuda.calls.clear()
    engine(x=torch.randn(2, 3, 8, 8))
    own, caller = engine._stream.cuda_stream, 0
    names = [call[0] for call in cuda.calls]
    launch = names.index("execute_async_v3")
    assert cuda.calls[launch] == ("execute_async_v3", own)
    assert ("wait_stream", own, caller) in cuda.calls[:launch]
    assert ("wait_stream", caller, own) in cuda.calls[launch:]
    recorded = [call for call in cuda.calls if call[0] == "record_stream"]
    assert [call[2] for call in recorded] == [own, caller, caller]  # x; then y and pooled


def test_a_view_at_an_odd_offset_is_copied_to_an_aligned_buffer(fakes, net: nn.Module,
                                                                 onnx_file: Path,
                                                                 tmp_path: Path) -> None:
    engine = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    flat = torch.randn(1 + 2 * 3 * 8 * 8)
    x = flat[1:].view(2, 3, 8, 8)  # contiguous, float32, 4 bytes into its allocation
    out = engine(x=x)
    assert torch.allclose(out["y"], _expected(net, x)[0], atol=1e-5)


def test_shapes_outside_the_profile_are_one_line_errors(fakes, onnx_file: Path,
                                                        tmp_path: Path) -> None:
    engine = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    with pytest.raises(ValueError, match=r"outside the engine's profile.*--batch"):
        engine(x=torch.randn(5, 3, 8, 8))
    with pytest.raises(EngineMismatchError, match="pipeline sends 1..8"):
        engine.check_batch(8)


# --- caches -------------------------------------------------------------------------------


def test_an_engine_from_another_gpu_generation_is_not_loaded(monkeypatch, onnx_file: Path,
                                                             tmp_path: Path) -> None:
    fake_tensorrt.install(monkeypatch, capability=(8, 9))
    ada = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    monkeypatch.undo()
    fake_tensorrt.install(monkeypatch, capability=(9, 0))
    hopper = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    names = sorted(p.name for p in tmp_path.glob("*.engine"))
    assert names == ["net.fp32.b1-2-4.trt10.16.1.11.sm89.engine",
                     "net.fp32.b1-2-4.trt10.16.1.11.sm90.engine"]
    assert ada is not hopper
    # an sm89 engine under the sm90 name (a copied cache): the key check refuses it
    sm89, sm90 = (tmp_path / name for name in names)
    for suffix in ("", ".json"):
        Path(f"{sm90}{suffix}").write_bytes(Path(f"{sm89}{suffix}").read_bytes())
    with pytest.raises(EngineMismatchError, match=r"compute_capability: 8\.9 -> 9\.0.*--rebuild"):
        TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32")
    rebuilt = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), "fp32",
                                  rebuild=True)
    assert rebuilt(x=torch.randn(1, 3, 8, 8))["y"].shape == (1, 4, 8, 8)


def test_engine_names_carry_tensorrt_and_the_gpu() -> None:
    profile = {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}
    plain, _ = engine_paths("c", "g.onnx", "fp16", profile)
    tagged, sidecar = engine_paths("c", "g.onnx", "fp16", profile, tensorrt_version="10.16.1",
                                   compute_capability=(12, 0))
    assert plain.name == "g.fp16.b1-2-4.engine"
    assert tagged.name == "g.fp16.b1-2-4.trt10.16.1.sm120.engine"
    assert sidecar.name == tagged.name + ".json"


# --- one CUDA stack -----------------------------------------------------------------------


def test_torch_and_tensorrt_must_share_a_cuda_major(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    check_cuda_stack("13.0", {13})
    check_cuda_stack("13.0", set())  # TensorRT not from pip wheels: nothing to compare
    with pytest.raises(BackendUnavailableError) as caught:
        check_cuda_stack("13.0", {12})
    message = str(caught.value)
    assert "\n" not in message and "CUDA 13.0 but TensorRT for CUDA 12" in message
    assert "pip install 'tensorrt-cu13>=10.13.2,<11'" in message
    with pytest.raises(BackendUnavailableError, match=r"'tensorrt-cu12>=10,<11'"):
        check_cuda_stack("12.8", {13})
    with pytest.raises(BackendUnavailableError, match="installed together"):
        check_cuda_stack("13.0", {12, 13})

    # what pip installed, read from the distributions that own the modules
    owners = {"tensorrt": ["tensorrt_cu12"], "tensorrt_bindings": ["tensorrt_cu12_bindings"],
              "tensorrt_libs": ["tensorrt_cu12_libs"], "torch": ["torch"]}
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: owners)
    assert tensorrt_cuda_majors() == {12}
    fake_tensorrt.install(monkeypatch)  # torch.version.cuda = "13.0"
    with pytest.raises(BackendUnavailableError, match="tensorrt-cu13"):
        import_tensorrt()
    owners.update(tensorrt=["tensorrt_cu13"], tensorrt_bindings=["tensorrt_cu13_bindings"],
                  tensorrt_libs=["tensorrt_cu13_libs"])
    assert import_tensorrt().__version__ == fake_tensorrt.VERSION


# --- the fake can fail ------------------------------------------------------------------------


def _context(onnx_file: Path, tmp_path: Path, precision: str = "fp32"):
    engine = TrtEngine.from_onnx(onnx_file, tmp_path, _profile(onnx_file), precision)
    return engine, engine._context


def test_the_fake_refuses_an_output_read_before_the_input_shapes(fakes, onnx_file: Path,
                                                                  tmp_path: Path) -> None:
    _, context = _context(onnx_file, tmp_path)
    with pytest.raises(ContractViolation, match="before the input shapes"):
        context.get_tensor_shape("y")
    assert context.set_input_shape("x", (9, 3, 8, 8)) is False  # outside the profile
    assert context.set_input_shape("x", (2, 3, 8, 8)) is True
    assert context.get_tensor_shape("y") == (2, 4, 8, 8)
    with pytest.raises(ContractViolation, match="infer_shapes"):
        context.all_binding_shapes_specified  # noqa: B018


def test_the_fake_refuses_misaligned_and_wrongly_typed_buffers(fakes, onnx_file: Path,
                                                               tmp_path: Path) -> None:
    _, context = _context(onnx_file, tmp_path)
    view = torch.zeros(1 + 2 * 3 * 8 * 8)[1:]
    half = torch.zeros(2, 3, 8, 8, dtype=torch.float16)
    with pytest.raises(ContractViolation, match="256-byte boundary"):
        context.set_tensor_address("x", view.data_ptr())
    with pytest.raises(ContractViolation, match="float16 memory"):
        context.set_tensor_address("x", half.data_ptr())
    with pytest.raises(ContractViolation, match="not the data_ptr"):
        context.set_tensor_address("x", 0x1000)


def test_the_fake_refuses_a_launch_that_breaks_the_contract(fakes, onnx_file: Path,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    _, cuda = fakes
    engine, context = _context(onnx_file, tmp_path)
    x, y, pooled = torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 8, 8), torch.zeros(2, 4)
    stream = torch.cuda.Stream()
    with pytest.raises(ContractViolation, match="legacy default stream"):
        context.execute_async_v3(0)
    with torch.cuda.stream(stream), pytest.raises(ContractViolation, match="current stream"):
        context.execute_async_v3(engine._stream.cuda_stream)
    with torch.cuda.stream(stream), pytest.raises(ContractViolation, match="did not wait"):
        context.execute_async_v3(stream.cuda_stream)
    stream.wait_stream(cuda.current_stream())
    with torch.cuda.stream(stream), pytest.raises(ContractViolation, match="shapes of"):
        context.execute_async_v3(stream.cuda_stream)
    context.set_input_shape("x", (2, 3, 8, 8))
    context.set_tensor_address("x", x.data_ptr())
    with torch.cuda.stream(stream), pytest.raises(ContractViolation, match="not bound"):
        context.execute_async_v3(stream.cuda_stream)
    small = torch.zeros(1, 4, 8, 8)
    context.set_tensor_address("y", small.data_ptr())  # too small for batch 2
    context.set_tensor_address("pooled", pooled.data_ptr())
    with torch.cuda.stream(stream), pytest.raises(ContractViolation, match="past the end"):
        context.execute_async_v3(stream.cuda_stream)
    context.set_tensor_address("y", y.data_ptr())
    with torch.cuda.stream(stream):
        assert context.execute_async_v3(stream.cuda_stream)
    with pytest.raises(ContractViolation, match="without waiting"):
        cuda.check_ready(cuda.current_stream(), stream.cuda_stream)
    assert y.abs().sum() > 0  # written through the bound address

    # vidinv's own call, with its alignment copy taken out, is refused by the fake
    from vidinv.engines import trt_engine

    monkeypatch.setattr(trt_engine, "TENSOR_ALIGNMENT", 1)  # data_ptr() % 1 == 0: no copy
    with pytest.raises(ContractViolation, match="256-byte boundary"):
        engine(x=torch.randn(1 + 2 * 3 * 8 * 8)[1:].view(2, 3, 8, 8))


# --- the pipeline's engines on the fake: export keys, a stale engine, `engines build --rebuild`


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    from tests.model_fixtures import make_tiny_model
    from vidinv.models.folder import load_model_bundle

    return load_model_bundle(make_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


def test_the_pipeline_runs_on_tensorrt_and_a_stale_engine_is_rebuilt_by_the_cli(
        tiny_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from vidinv.cli.app import main
    from vidinv.config import EngineSettings
    from vidinv.engines.model_graphs import engines_for_bundle, make_model_engines
    from vidinv.models.folder import engine_cache_folder

    monkeypatch.setenv("VIDINV_CACHE", str(tmp_path / "cache"))
    # the ONNX files first, without the fake (torch's exporter asks torch.cuda questions the
    # fake cannot answer); the TensorRT run reuses them: the export key has no backend in it
    engines_for_bundle(tiny_bundle, EngineSettings(backend="onnx"), with_reconstruction=True)
    exported = sorted(p.name for p in engine_cache_folder(tiny_bundle).glob("*.onnx"))
    fake_tensorrt.install(monkeypatch)
    settings = EngineSettings(backend="tensorrt", batch_size=2)
    trt = engines_for_bundle(tiny_bundle, settings, with_reconstruction=True)
    reference = make_model_engines(tiny_bundle.generator, tiny_bundle.encoder, backend="torch",
                                   device="cpu", with_reconstruction=True)
    images = torch.rand(2, 3, tiny_bundle.crop_size, tiny_bundle.crop_size) * 2 - 1
    w, features = reference.encode(images)
    w_trt, features_trt = trt.encode(images)
    assert (w_trt - w).abs().max() <= 2e-2 * w.abs().max()
    offset = 0.3 * torch.randn_like(w)
    for got, expected in zip(trt.edit_render(w, features, offset),
                             reference.edit_render(w, features, offset), strict=True):
        assert (got - expected).abs().max() <= 2e-2 * expected.abs().max()

    # an engine whose ONNX file changed under it (a sidecar of other bytes): refused, naming
    # the fix, and `vidinv engines build --rebuild` with the same options replaces it
    folder = engine_cache_folder(tiny_bundle)
    sidecar = sorted(folder.glob("encoder.*.engine.json"))[0]
    record = json.loads(sidecar.read_text())
    record["parts"]["onnx_sha256"] = "0" * 64
    record["key"] = "stale"
    sidecar.write_text(json.dumps(record))
    with pytest.raises(EngineMismatchError, match="onnx_sha256.*--rebuild"):
        engines_for_bundle(tiny_bundle, settings, with_reconstruction=True)
    assert main(["engines", "build", "--model", str(tiny_bundle.folder), "--batch", "2",
                 "--rebuild"]) == 0
    assert "tensorrt fp16" in capsys.readouterr().out
    engines_for_bundle(tiny_bundle, settings, with_reconstruction=True)  # loads again
    assert sorted(p.name for p in folder.glob("*.onnx")) == exported  # nothing re-exported


def test_the_export_is_keyed_by_weights_code_torch_opset_and_spec(
        tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import copy
    import dataclasses

    from vidinv.engines import onnx_export
    from vidinv.engines.generator_export import load_generator_spec
    from vidinv.engines.model_graphs import EditRenderGraph

    graph = EditRenderGraph(tiny_bundle.generator, tiny_bundle.k)
    spec = dataclasses.asdict(load_generator_spec())
    key = onnx_export.export_key(graph, 18, spec)
    assert onnx_export.export_key(graph, 18, spec) == key  # stable
    changed = copy.deepcopy(tiny_bundle.generator)
    with torch.no_grad():
        next(changed.synthesis.parameters()).add_(1e-3)
    assert onnx_export.export_key(EditRenderGraph(changed, tiny_bundle.k), 18, spec) != key
    assert onnx_export.export_key(graph, 19, spec) != key
    assert onnx_export.export_key(graph, 18, {**spec, "example_batch": 3}) != key
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    assert onnx_export.export_key(graph, 18, spec) != key
    monkeypatch.undo()
    # the code: the files of the modules defining the graph (StyleGAN2, the graph, the exporter)
    import vidinv.models.stylegan2 as stylegan2

    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: real_read(self) + (
        b"# edited" if self == Path(stylegan2.__file__) else b""))
    assert onnx_export.export_key(graph, 18, spec) != key
    assert onnx_export.keyed_onnx_name("encoder.onnx", key) == f"encoder.{key[:12]}.onnx"
