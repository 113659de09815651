"""Export the StyleGAN2 synthesis network as the two graphs the render stage runs.

* ``synthesis.onnx``: ``ws`` [B,n_latent,512] -> ``image`` [B,3,R,R];
* ``synthesis_features_k5.onnx``: ``ws`` [B,n_latent,512], ``features`` [B,C,16,16] ->
  ``image`` [B,3,R,R] — the Feature-Style Encoder path, F in place of the k-th feature tensor.

What is exported, under which names, with which dynamic axis, and the TensorRT profile, are data
in ``engines/generator.toml`` (:func:`load_generator_spec`); this module only holds the code.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidinv.engines.base import TensorSpec
from vidinv.engines.onnx_export import export_onnx
from vidinv.errors import InputFileError

#: ``engines/generator.toml`` at the repository root (present in a source checkout).
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2] / "engines" / "generator.toml"
_GRAPH_KINDS = ("synthesis", "synthesis_features")


class SynthesisModule(nn.Module):
    """``ws`` [B,n_latent,512] float32 -> ``image`` [B,3,R,R] float32, about [-1,1].

    Shares its parameters with ``generator.synthesis`` (nothing is copied).
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.synthesis = generator.synthesis

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws)


class SynthesisWithFeaturesModule(nn.Module):
    """(``ws`` [B,n_latent,512], ``features`` [B,C,R_k,R_k]) -> ``image`` [B,3,R,R].

    ``features`` replaces the generator's k-th feature tensor (``generator.features(ws, k)``);
    ``k`` is fixed at construction, so the exported graph has no mode switch.
    """

    def __init__(self, generator: nn.Module, k: int) -> None:
        super().__init__()
        self.synthesis = generator.synthesis
        self.k = int(k)
        self.synthesis.feature_shape(self.k)  # validates k

    def forward(self, ws: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws, features=features, k=self.k)


def synthesis_specs(generator: Any, batch_dim: str = "batch"
                    ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of :class:`SynthesisModule` for ``generator``."""
    ws = TensorSpec("ws", (batch_dim, generator.n_latent, generator.style_dim), "float32")
    image = TensorSpec("image", (batch_dim, 3, generator.resolution, generator.resolution),
                       "float32")
    return (ws,), (image,)


def synthesis_features_specs(generator: Any, k: int, batch_dim: str = "batch"
                             ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of :class:`SynthesisWithFeaturesModule` for ``generator`` and ``k``."""
    (ws,), outputs = synthesis_specs(generator, batch_dim)
    features = TensorSpec("features", (batch_dim, *generator.synthesis.feature_shape(k)),
                          "float32")
    return (ws, features), outputs


# ---------------------------------------------------------------------------------------------
# engines/generator.toml
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its file name (``{k}`` is filled in) and tensor names."""

    kind: str
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def file_name(self, k: int) -> str:
        return self.file.format(k=k)


@dataclass(frozen=True)
class TensorRTBuildSpec:
    """How TensorRT engines are built from the exported graphs."""

    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_bytes: int
    cache_dir: Path


@dataclass(frozen=True)
class GeneratorEngineSpec:
    """The contents of ``engines/generator.toml``."""

    opset: int
    batch_dim: str
    example_batch: int
    feature_k: int
    graphs: Mapping[str, GraphSpec]
    tensorrt: TensorRTBuildSpec


_SCHEMA = {
    "export": {"opset": int, "batch_dim": str, "example_batch": int, "feature_k": int},
    "graph": {"file": str, "inputs": list, "outputs": list},
    "tensorrt": {"precision": str, "min_batch": int, "opt_batch": int, "max_batch": int,
                 "workspace_gib": (int, float), "cache_dir": str},
}
# What each graph kind's wrapper takes and returns; the TOML must agree.
_WRAPPER_IO = {"synthesis": (("ws",), ("image",)),
               "synthesis_features": (("ws", "features"), ("image",))}


def load_generator_spec(path: str | os.PathLike[str] | None = None) -> GeneratorEngineSpec:
    """Read ``engines/generator.toml`` (or ``path``); every key is required, none unknown.

    Raises InputFileError for a missing, malformed or inconsistent file, naming the key.
    """
    path = Path(path) if path is not None else DEFAULT_SPEC_PATH
    if not path.is_file():
        raise InputFileError(f"engine spec not found: {path}; pass the path of a "
                             "generator.toml (the repository has one in engines/)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid TOML ({exc})") from None

    def table(section: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
        schema = _SCHEMA[kind]
        unknown = sorted(set(section) - set(schema))
        missing = sorted(set(schema) - set(section))
        if unknown or missing:
            raise InputFileError(f"{path} [{where}]: " + ", ".join(
                ([f"unknown keys {unknown}"] if unknown else [])
                + ([f"missing keys {missing}"] if missing else [])))
        for key, expected in schema.items():
            if not isinstance(section[key], expected) or isinstance(section[key], bool):
                raise InputFileError(f"{path} [{where}] {key} = {section[key]!r} has the wrong "
                                     "type")
        return section

    unknown = sorted(set(data) - {"export", "graphs", "tensorrt"})
    if unknown or not {"export", "graphs", "tensorrt"} <= set(data):
        raise InputFileError(f"{path} needs exactly the tables [export], [graphs.*] and "
                             f"[tensorrt] (unknown: {unknown})")
    export = table(data["export"], "export", "export")
    graphs = {}
    for kind, section in data["graphs"].items():
        if kind not in _GRAPH_KINDS:
            raise InputFileError(f"{path} [graphs.{kind}]: unknown graph, expected one of "
                                 f"{list(_GRAPH_KINDS)}")
        section = table(section, f"graphs.{kind}", "graph")
        graph = GraphSpec(kind, section["file"], tuple(section["inputs"]),
                          tuple(section["outputs"]))
        if (graph.inputs, graph.outputs) != _WRAPPER_IO[kind]:
            raise InputFileError(f"{path} [graphs.{kind}]: the {kind} graph takes "
                                 f"{list(_WRAPPER_IO[kind][0])} and returns "
                                 f"{list(_WRAPPER_IO[kind][1])}")
        graphs[kind] = graph
    trt = table(data["tensorrt"], "tensorrt", "tensorrt")
    if trt["precision"] not in ("fp16", "fp32"):
        raise InputFileError(f"{path} [tensorrt] precision must be 'fp16' or 'fp32'")
    if not 1 <= trt["min_batch"] <= trt["opt_batch"] <= trt["max_batch"]:
        raise InputFileError(f"{path} [tensorrt] needs 1 <= min_batch <= opt_batch <= "
                             "max_batch")
    return GeneratorEngineSpec(
        opset=export["opset"], batch_dim=export["batch_dim"],
        example_batch=export["example_batch"], feature_k=export["feature_k"], graphs=graphs,
        tensorrt=TensorRTBuildSpec(
            precision=trt["precision"], min_batch=trt["min_batch"],
            opt_batch=trt["opt_batch"], max_batch=trt["max_batch"],
            workspace_bytes=int(trt["workspace_gib"] * (1 << 30)),
            cache_dir=(path.parent / trt["cache_dir"]).resolve()))


# ---------------------------------------------------------------------------------------------
# Export and build
# ---------------------------------------------------------------------------------------------


def export_generator(generator: nn.Module, out_dir: str | os.PathLike[str],
                     k: int | None = None, spec: GeneratorEngineSpec | None = None,
                     graphs: Sequence[str] | None = None) -> dict[str, Path]:
    """Export the graphs listed in the spec to ``out_dir``; ``{file stem: path}``.

    Args:
        generator: a float32 :class:`~vidinv.models.stylegan2.StyleGAN2Generator` (any device).
            TensorRT applies fp16 itself; export from the fp32 weights.
        out_dir: created if missing; files in it are replaced atomically.
        k: feature index of the features graph; default: the spec's ``feature_k`` (5).
        spec: default: :func:`load_generator_spec` of ``engines/generator.toml``.
        graphs: the graph kinds to export (``"synthesis"``, ``"synthesis_features"``);
            default: every graph in the spec.

    With the default spec this writes ``synthesis.onnx`` and ``synthesis_features_k5.onnx``.
    """
    spec = spec if spec is not None else load_generator_spec()
    k = spec.feature_k if k is None else int(k)
    kinds = list(spec.graphs) if graphs is None else list(graphs)
    unknown = [kind for kind in kinds if kind not in spec.graphs]
    if unknown:
        raise ValueError(f"unknown graphs {unknown}; the spec has {list(spec.graphs)}")
    params = list(generator.parameters())
    if any(p.dtype != torch.float32 for p in params):
        raise ValueError("export the float32 generator (TensorRT makes its own fp16 engine)")
    device = params[0].device if params else torch.device("cpu")
    seed = torch.Generator().manual_seed(0)
    ws = torch.randn(spec.example_batch, generator.n_latent, generator.style_dim,
                     generator=seed).to(device)
    with torch.no_grad():
        features = generator.features(ws, k) if "synthesis_features" in kinds else None

    out_dir = Path(out_dir)
    written = {}
    for kind in kinds:
        graph = spec.graphs[kind]
        if kind == "synthesis":
            module: nn.Module = SynthesisModule(generator)
            examples = {"ws": ws}
        else:
            module = SynthesisWithFeaturesModule(generator, k)
            examples = {"ws": ws, "features": features}
        path = out_dir / graph.file_name(k)
        axes = {name: {0: spec.batch_dim} for name in graph.inputs + graph.outputs}
        written[path.stem] = export_onnx(module, examples, graph.outputs, path,
                                         dynamic_axes=axes, opset=spec.opset)
    return written


def build_generator_engines(onnx_paths: Mapping[str, str | os.PathLike[str]],
                            spec: GeneratorEngineSpec | None = None,
                            device: str = "cuda") -> dict[str, Path]:
    """Build a TensorRT engine for each exported graph per the spec's ``[tensorrt]`` table.

    ``onnx_paths`` is what :func:`export_generator` returned; returns ``{stem: engine path}``.
    Needs tensorrt and an NVIDIA GPU (BackendUnavailableError otherwise).
    """
    from vidinv.engines.onnx_export import read_onnx_specs
    from vidinv.engines.trt_engine import batch_profile, build_engine

    spec = spec if spec is not None else load_generator_spec()
    build = spec.tensorrt
    engines = {}
    for stem, onnx_path in onnx_paths.items():
        input_specs, _ = read_onnx_specs(onnx_path)
        profile = batch_profile(input_specs, build.min_batch, build.opt_batch, build.max_batch,
                                spec.batch_dim)
        engines[stem] = build_engine(onnx_path, build.cache_dir, profile, build.precision,
                                     build.workspace_bytes, device)
    return engines
