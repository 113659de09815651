"""Export the StyleGAN2 synthesis network (the plain graphs, for benchmarks and other tools), and
read the engine spec ``engines/generator.toml``.

The pipeline's own graphs (the encoder and the one-graph edit+render) are in
:mod:`vidinv.engines.model_graphs`. The plain graphs:

* ``synthesis.onnx``: ``ws`` [B,n_latent,512] -> ``image`` [B,3,R,R];
* ``synthesis_features_k5.onnx``: ``ws`` [B,n_latent,512], ``features`` [B,C,16,16] ->
  ``image`` [B,3,R,R] — the Feature-Style Encoder path, F in place of the k-th feature tensor.

What is exported, under which names, with which dynamic axis, and how TensorRT builds it, are
data in ``engines/generator.toml`` (:func:`load_generator_spec`); this module only holds the code.
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
from vidinv.models.encoder import FEATURE_INDEX

#: The engine spec shipped in the package; ``engines/generator.toml`` at the repository's top
#: level is the user-editable copy (pass it with ``--spec``).
DEFAULT_SPEC_PATH = Path(__file__).resolve().parent.parent / "assets" / "engines" / "generator.toml"


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
    """How TensorRT engines are built from the exported graphs.

    The optimisation profile is not here: it follows the pipeline's batch size (min 1, opt =
    ``engine.batch_size``, max = the larger of that and ``max_batch``).
    """

    precision: str
    max_batch: int
    workspace_bytes: int
    optimization_level: int


@dataclass(frozen=True)
class GeneratorEngineSpec:
    """The contents of ``engines/generator.toml``."""

    opset: int
    batch_dim: str
    example_batch: int
    graphs: Mapping[str, GraphSpec]
    tensorrt: TensorRTBuildSpec


_SCHEMA = {
    "export": {"opset": int, "batch_dim": str, "example_batch": int},
    "graph": {"file": str, "inputs": list, "outputs": list},
    "tensorrt": {"precision": str, "max_batch": int, "workspace_gib": (int, float),
                 "optimization_level": int},
}
# What each graph kind's wrapper takes and returns; the TOML must agree.
_GENERATOR_GRAPHS = ("synthesis", "synthesis_features")
_WRAPPER_IO = {"synthesis": (("ws",), ("image",)),
               "synthesis_features": (("ws", "features"), ("image",)),
               "encoder": (("image",), ("w", "features")),
               "edit_render": (("w", "features", "offset"), ("image",)),
               "edit_render_reconstruction": (("w", "features", "offset"),
                                              ("image", "reconstruction"))}
_GRAPH_KINDS = tuple(_WRAPPER_IO)


def load_generator_spec(path: str | os.PathLike[str] | None = None) -> GeneratorEngineSpec:
    """Read ``engines/generator.toml`` (default: the copy shipped in the package, or
    ``path``); every key is required, none unknown.

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
    missing = sorted(set(_GRAPH_KINDS) - set(graphs))
    if missing:
        raise InputFileError(f"{path}: missing graph tables {missing}")
    trt = table(data["tensorrt"], "tensorrt", "tensorrt")
    if trt["precision"] not in ("fp16", "fp32"):
        raise InputFileError(f"{path} [tensorrt] precision must be 'fp16' or 'fp32'")
    if trt["max_batch"] < 1:
        raise InputFileError(f"{path} [tensorrt] max_batch must be at least 1")
    if not 0 <= trt["optimization_level"] <= 5:
        raise InputFileError(f"{path} [tensorrt] optimization_level must be 0..5")
    if trt["workspace_gib"] <= 0:
        raise InputFileError(f"{path} [tensorrt] workspace_gib must be positive")
    return GeneratorEngineSpec(
        opset=export["opset"], batch_dim=export["batch_dim"],
        example_batch=export["example_batch"], graphs=graphs,
        tensorrt=TensorRTBuildSpec(
            precision=trt["precision"], max_batch=trt["max_batch"],
            workspace_bytes=int(trt["workspace_gib"] * (1 << 30)),
            optimization_level=trt["optimization_level"]))


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
        k: feature index of the features graph; default: the FSE's layer
            (:data:`vidinv.models.encoder.FEATURE_INDEX`, 5).
        spec: default: :func:`load_generator_spec` of ``engines/generator.toml``.
        graphs: the graph kinds to export (``"synthesis"``, ``"synthesis_features"``);
            default: both.

    With the default spec this writes ``synthesis.onnx`` and ``synthesis_features_k5.onnx``.
    """
    spec = spec if spec is not None else load_generator_spec()
    k = FEATURE_INDEX if k is None else int(k)
    kinds = list(_GENERATOR_GRAPHS) if graphs is None else list(graphs)
    unknown = [kind for kind in kinds if kind not in _GENERATOR_GRAPHS]
    if unknown:
        raise ValueError(f"unknown graphs {unknown}; export_generator writes "
                         f"{list(_GENERATOR_GRAPHS)}")
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
