"""Export a module to a single, checked, static-weight ONNX file.

Exporter choice (torch 2.13): the ``torch.export``-based exporter (``dynamo=True``).

* The legacy TorchScript exporter (``dynamo=False``, still present but deprecated) cannot export
  :mod:`vidinv.models.stylegan2` at all: tracing loses the channel count of the padded tensor in
  the depthwise blur, and it stops with "ONNX export of convolution for kernel of unknown shape"
  (with or without a dynamic batch). It also bakes Python-side decisions in silently (tracer
  warnings) where ``torch.export`` fails loudly, and it leaves symbolic spatial output
  sizes where the graph resizes.
* The dynamo exporter exports both generator graphs, keeps every dimension but ``batch`` fixed in
  the graph signature, and ONNX Runtime matches torch to ~3e-6 at batch 1 and 3. Its costs: a few
  seconds per export (symbolic tracing and decompositions), and its lowest native opset is 18 —
  asking for 17 triggers a fallback version converter that fails on ``Pad`` and leaves the model
  at 18, so 18 is the default here and a silent downgrade failure is turned into an error.

Its built-in optimiser does not fold large constants (``weight * gain`` of a 3×3 conv is above
onnxscript's default size limit), so the convolution weights would be computed at run time. The
exported model is therefore folded again with no size limit: every Conv/ConvTranspose/Gemm weight
is an initializer (what TensorRT's parser wants — ConvTranspose weights *must* be constant there).

The file is written whole or not at all (temporary file, then ``os.replace``) and is embedded in a
single ``.onnx`` (no external data), so its bytes are the whole model — the TensorRT cache key
hashes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import sys
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidinv.engines.base import TensorSpec
from vidinv.errors import BackendUnavailableError, CheckpointError, InputFileError
from vidinv.io_safety import write_atomically

#: The lowest opset the torch.export-based exporter emits natively (see the module docstring).
DEFAULT_OPSET = 18
#: Fold every constant sub-graph, whatever its size, so weights are initializers.
_FOLD_SIZE_LIMIT = 1 << 62
_PROTOBUF_LIMIT = 2**31 - 1
_INSTALL_HINT = "pip install 'vidinv[onnx]'"

DynamicAxes = Mapping[str, Mapping[int, str]]


def import_onnx() -> Any:
    """The ``onnx`` module, or BackendUnavailableError naming the extra to install."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the onnx package is not usable ({exc}); install it with: {_INSTALL_HINT}") from exc
    return onnx


def _import_onnxscript_optimizer() -> Any:
    try:
        import onnxscript.optimizer
    except ImportError as exc:
        raise BackendUnavailableError(
            f"ONNX export needs onnxscript ({exc}); install it with: {_INSTALL_HINT}") from exc
    return onnxscript.optimizer


def export_onnx(module: nn.Module, example_inputs: Mapping[str, torch.Tensor],
                output_names: Sequence[str], path: str | os.PathLike[str],
                dynamic_axes: DynamicAxes | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``module`` to ``path`` and return the path.

    Args:
        module: called as ``module(*example_inputs.values())``; the keys of ``example_inputs``
            must be the names of its ``forward`` parameters, in order. They become the ONNX
            input names. The module is exported in eval mode (its mode is restored after).
        example_inputs: one example tensor per input (any batch size, 1 included).
        output_names: names of the outputs, in the order ``forward`` returns them.
        path: the ``.onnx`` file to write (its folder is created).
        dynamic_axes: ``{tensor name: {axis: dim name}}``, e.g. ``{"ws": {0: "batch"}}``.
            Inputs that share a dim name must share its size. Output entries name the output's
            dimension (it must come out dynamic). Axes not listed are fixed at the example's size.
        opset: ONNX opset of the default domain; 18 is the lowest the exporter supports natively.

    Raises:
        BackendUnavailableError: onnx or onnxscript is missing.
        ValueError: names do not match ``forward``, or the export came out other than asked.
    """
    onnx = import_onnx()
    optimizer = _import_onnxscript_optimizer()
    path = Path(path)
    input_names = list(example_inputs)
    output_names = list(output_names)
    dynamic_axes = {name: dict(axes) for name, axes in (dynamic_axes or {}).items()}
    _check_names(module, input_names, output_names, dynamic_axes)

    was_training = module.training
    module.eval()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module, tuple(example_inputs.values()), None,
                input_names=input_names, output_names=output_names, opset_version=opset,
                dynamo=True, dynamic_shapes=_dynamic_shapes(input_names, dynamic_axes),
                optimize=False, verbose=False)
    finally:
        module.train(was_training)

    model = optimizer.optimize(program.model_proto, input_size_limit=_FOLD_SIZE_LIMIT,
                               output_size_limit=_FOLD_SIZE_LIMIT)
    actual_opset = next(entry.version for entry in model.opset_import
                        if entry.domain in ("", "ai.onnx"))
    if actual_opset != opset:
        raise ValueError(f"asked for ONNX opset {opset} but the exporter produced opset "
                         f"{actual_opset}; use opset >= {DEFAULT_OPSET}")
    _name_output_axes(model, dynamic_axes)
    meta = model.metadata_props.add()
    meta.key = "vidinv.exporter"
    meta.value = f"torch.onnx.export(dynamo=True), torch {torch.__version__}"

    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise ValueError(f"{type(module).__name__} is over 2 GiB as ONNX; single-file export "
                         "cannot hold it")
    onnx.checker.check_model(model, full_check=True)
    write_atomically(path, model.SerializeToString())
    return path


#: Hex digits of the export key in a cached ONNX file's name (``encoder.<key>.onnx``).
EXPORT_KEY_LENGTH = 12


def export_key(module: nn.Module, opset: int, spec: Mapping[str, Any]) -> str:
    """What an exported graph depends on, as one sha256 (hex): the module's weights
    (:func:`weights_digest`), the source of the vidinv code that defines its graph
    (:func:`graph_code_digest`), the torch version (its exporter), the opset and ``spec`` (the
    engine spec, JSON-able). A cached ONNX file named by it cannot be stale: any change of these
    names another file."""
    parts = {"weights": weights_digest(module), "code": graph_code_digest(module),
             "torch": torch.__version__, "opset": int(opset), "spec": spec}
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def keyed_onnx_name(onnx_name: str, key: str) -> str:
    """``encoder.onnx``, key -> ``encoder.<key[:12]>.onnx``."""
    stem = Path(onnx_name).stem
    return f"{stem}.{key[:EXPORT_KEY_LENGTH]}.onnx"


def stale_exports(folder: Path, onnx_name: str, keep: Path) -> list[Path]:
    """The other keyed exports of ``onnx_name`` in ``folder`` and the engines built from them
    (``<stem>.<other key>.*``): files no key can name again."""
    stem = Path(onnx_name).stem
    stale = []
    for path in folder.glob(f"{stem}.*.onnx"):
        key = path.name[len(stem) + 1:-len(".onnx")]
        if path != keep and len(key) == EXPORT_KEY_LENGTH and all(
                c in "0123456789abcdef" for c in key):
            stale += [path, *folder.glob(f"{stem}.{key}.*.engine"),
                      *folder.glob(f"{stem}.{key}.*.engine.json")]
    return stale


def weights_digest(module: nn.Module) -> str:
    """sha256 (hex) of a module's parameters and buffers: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def graph_code_digest(module: nn.Module) -> str:
    """sha256 (hex) of the source files of the vidinv modules that define ``module``'s graph:
    the module of every submodule's class, the vidinv modules those import from (helpers such
    as the StyleGAN2 operations), and this exporter (it folds and renames)."""
    names = {type(m).__module__ for m in module.modules()} | {__name__}
    names = {name for name in names if name.startswith("vidinv.")}
    for name in sorted(names):
        for value in vars(sys.modules[name]).values():
            owner = (value.__name__ if isinstance(value, types.ModuleType)
                     else getattr(value, "__module__", None))
            if isinstance(owner, str) and owner.startswith("vidinv.") and owner in sys.modules:
                names.add(owner)
    digest = hashlib.sha256()
    for name in sorted(names):
        source = getattr(sys.modules[name], "__file__", None)
        if source:
            digest.update(name.encode() + b"\0" + Path(source).read_bytes() + b"\0")
    return digest.hexdigest()


def read_onnx_specs(path: str | os.PathLike[str]) -> tuple[tuple[TensorSpec, ...],
                                                           tuple[TensorSpec, ...]]:
    """(input specs, output specs) of the graph in an ONNX file (weights are not loaded).

    Raises InputFileError for a missing file, CheckpointError for one that is not ONNX.
    """
    onnx = import_onnx()
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"ONNX file not found: {path}; export it first "
                             "(vidinv.engines.export_generator)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise CheckpointError(f"{path} is not a readable ONNX model "
                              f"({type(exc).__name__}); re-export it") from exc
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        shape = tuple(dim.dim_param if dim.HasField("dim_param") else
                      dim.dim_value if dim.HasField("dim_value") else f"{value.name}_dim{axis}"
                      for axis, dim in enumerate(tensor_type.shape.dim))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        return TensorSpec(value.name, shape, dtype)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in model.graph.output)


def _check_names(module: nn.Module, input_names: list[str], output_names: list[str],
                 dynamic_axes: dict[str, dict[int, str]]) -> None:
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    leading = [p.name for p in params[:len(input_names)]]
    if leading != input_names:
        raise ValueError(f"example_inputs {input_names} must name the first parameters of "
                         f"{type(module).__name__}.forward, which are {[p.name for p in params]}")
    if len(set(output_names)) != len(output_names) or set(output_names) & set(input_names):
        raise ValueError(f"output names {output_names} must be unique and differ from the "
                         f"inputs {input_names}")
    unknown = sorted(set(dynamic_axes) - set(input_names) - set(output_names))
    if unknown:
        raise ValueError(f"dynamic_axes names {unknown}, which are neither inputs "
                         f"{input_names} nor outputs {output_names}")
    for name, axes in dynamic_axes.items():
        for axis, dim_name in axes.items():
            if not (isinstance(dim_name, str) and dim_name.isidentifier()):
                raise ValueError(f"dynamic_axes[{name!r}][{axis}] = {dim_name!r} must be an "
                                 "identifier such as 'batch'")


def _dynamic_shapes(input_names: list[str],
                    dynamic_axes: dict[str, dict[int, str]]) -> dict[str, Any] | None:
    """``{"ws": {0: "batch"}}`` -> torch.export dynamic shapes with one Dim per dim name."""
    dims: dict[str, Any] = {}
    shapes = {
        name: {axis: dims.setdefault(dim_name, torch.export.Dim(dim_name))
               for axis, dim_name in dynamic_axes.get(name, {}).items()} or None
        for name in input_names
    }
    return shapes if dims else None


def _name_output_axes(model: Any, dynamic_axes: dict[str, dict[int, str]]) -> None:
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, dim_name in dynamic_axes.get(output.name, {}).items():
            if axis >= len(dims):
                raise ValueError(f"output {output.name!r} has {len(dims)} axes; "
                                 f"dynamic_axes names axis {axis}")
            if dims[axis].HasField("dim_value"):
                raise ValueError(f"output {output.name!r} axis {axis} came out fixed at "
                                 f"{dims[axis].dim_value}, not dynamic ({dim_name!r})")
            dims[axis].dim_param = dim_name


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known, harmless chatter (and nothing else)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        logger.setLevel(level)
