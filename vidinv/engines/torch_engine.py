"""Run a plain ``nn.Module`` behind the :class:`~vidinv.engines.base.Engine` interface.

On the CPU the module is traced (TorchScript) once per input shape and the traced graph runs:
it holds Python's GIL once per call instead of once per operation. Eagerly, a 64 px
edit+render makes hundreds of torch calls, each of which gives the GIL up and must win it back;
any other thread running Python in between (the pipeline's face, paste and output threads)
makes it wait each time, many times over (``benchmarks/pipeline.py`` shows the effect on
`edit`).

The trace is made from a copy of the module in ``channels_last`` memory format: oneDNN's CPU
convolutions run faster on it (``benchmarks/generator.py`` prints both layouts). The caller's
module is left as it is.

Tracing and freezing cost most of a second a run (the embedded model's encoder and edit+render
graphs: 0.35 + 0.42 s CPU, against 0.08 s to load them saved). Given a ``trace_cache`` folder,
each graph is kept there under a key of everything it was made from (:func:`trace_key`: the
weights, the vidinv code of the graph and of this tracer, torch, the input shapes, dtypes and
device), and a later run with the same key loads it. The key is also written inside the file
when it is saved (after the fresh trace was checked against the module on its first inputs);
a file is used only when it loads and carries its own name's key, which proves it was made
from the same weights, code, torch and shapes — checking it against the module again would run
the module eagerly once more (0.28 s CPU a run for the embedded model, a third of what the
cache saves). A file that does not load or carries another key (copied or renamed by hand, or
saved before keys were written into files) is traced anew and replaced. A cache that cannot be
written (read-only, full) only costs the time. The :data:`TRACES_KEPT` graphs used last are
kept, within :data:`TRACE_CACHE_BYTES`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from vidinv.engines.base import TensorSpec, bind_dynamic_sizes, torch_dtype
from vidinv.errors import BackendUnavailableError

_COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
#: A traced graph must give the module's own outputs on the inputs it was traced with, to this
#: absolute error (float32 reassociation only); otherwise the module runs eagerly.
TRACE_TOLERANCE = 1e-4
#: The entry of a saved trace's archive that holds its key (:func:`trace_key`, the file's name).
TRACE_KEY_FILE = "vidinv_trace_key"
#: Traced graphs a trace cache folder keeps (the most recently used; a save removes the rest),
#: and the most bytes they may take together (a frozen graph holds its weights: the embedded
#: model's two are 38 MB, a 1024 px model's far more); the graph just saved is always kept.
TRACES_KEPT = 8
TRACE_CACHE_BYTES = 2 * 1024 ** 3

log = logging.getLogger(__name__)


def resolve_torch_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> torch.device; CUDA must be usable."""
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu' or 'cuda'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device={device!r} needs a CUDA build of torch and an NVIDIA GPU, and none is "
            "usable here; use device='cpu'")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def trace_key(module: nn.Module, args: Mapping[str, torch.Tensor],
              outputs: Sequence[str] = ()) -> str:
    """What a saved trace of ``module`` for ``args`` depends on, as one sha256 (hex): the
    module's weights, the source of the vidinv code that defines its graph (both as for an
    ONNX export, :func:`~vidinv.engines.onnx_export.export_key`) and of this tracer, the torch
    version, each input's name, shape, dtype and device, the module's class and the names of
    its ``outputs`` (one graph class makes the edit with and without the reconstruction from
    the same weights). A file named by it cannot be stale: any change of these names another
    file."""
    from vidinv.engines.onnx_export import graph_code_digest, weights_digest

    parts = {"weights": weights_digest(module), "code": graph_code_digest(module),
             "tracer": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
             "torch": torch.__version__,
             "inputs": [[name, list(t.shape), str(t.dtype), str(t.device)]
                        for name, t in args.items()],
             "class": f"{type(module).__module__}.{type(module).__qualname__}",
             "outputs": list(outputs)}
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class TorchEngine:
    """An ``nn.Module`` called with the spec'd keyword inputs under ``torch.inference_mode``.

    ``module.forward`` must take the input names as parameters and return a tensor, a tuple of
    tensors (in ``output_specs`` order) or a dict keyed by the output names.

    The module is moved to ``device`` and, for ``precision="fp16"``, cast to half; if that needs
    a conversion, a copy is converted so the caller's module is left as it was. Floating inputs
    are cast to the compute dtype and outputs back to the spec dtype (float32), so callers see the
    same boundary as with every other engine. fp16 runs only on CUDA: on CPU it is refused.

    ``trace`` (default: on the CPU) runs a TorchScript trace of the module, made on the first
    call with each input shape and checked against the module on those inputs (a module whose
    trace differs, or cannot be traced, runs eagerly; a graph loaded from ``trace_cache`` was
    checked so when it was saved). A trace records the operations the
    example ran: a module that branches on input *values* (not shapes) needs ``trace=False``;
    the encoder and edit+render graphs do not. A batch smaller than a traced one runs
    eagerly (a clip's last, partial batch). A shape that cannot be traced is said in one warning
    line (logger ``vidinv.engines.torch_engine``), as eager runs are many times slower while
    other threads run. The module's weights are read when a shape is first traced: change them,
    make a new engine. ``trace_cache``: a folder where traced graphs are kept between runs (see
    the module docstring); None traces each run.
    """

    def __init__(self, module: nn.Module, input_specs: Sequence[TensorSpec],
                 output_specs: Sequence[TensorSpec], device: str = "cpu",
                 precision: str = "fp32", name: str | None = None,
                 trace: bool | None = None,
                 trace_cache: str | os.PathLike[str] | None = None) -> None:
        if precision not in _COMPUTE_DTYPES:
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        torch_device = resolve_torch_device(device)
        if precision == "fp16" and torch_device.type == "cpu":
            raise BackendUnavailableError(
                "precision='fp16' with the torch backend needs device='cuda' (half-precision "
                "convolutions on CPU are slow or missing); use precision='fp32' on CPU")
        self._compute_dtype = _COMPUTE_DTYPES[precision]
        self._input_specs = tuple(input_specs)
        self._output_specs = tuple(output_specs)
        on_cuda = torch_device.type == "cuda"
        if on_cuda:  # cuDNN times its kernels once per shape; the pipeline's shapes are fixed
            torch.backends.cudnn.benchmark = True
        # on CUDA, NHWC: what cuDNN's tensor-core (fp16) convolutions read without transposing
        self._module = self._prepared(module, torch_device, self._compute_dtype,
                                      channels_last=on_cuda)
        self._channels_last = on_cuda
        self._torch_device = torch_device
        self.device = str(torch_device)
        self.precision = precision
        self.name = name or f"{type(module).__name__} (torch)"
        self.trace = torch_device.type == "cpu" if trace is None else bool(trace)
        self.trace_cache = None if trace_cache is None else Path(trace_cache)
        # input shapes -> traced graph, or None where the module runs eagerly
        self._traced: dict[tuple, torch.jit.ScriptModule | None] = {}

    @staticmethod
    def _prepared(module: nn.Module, device: torch.device, dtype: torch.dtype,
                  channels_last: bool = False) -> nn.Module:
        tensors = list(module.parameters()) + list(module.buffers())
        needs_conversion = any(
            t.device != device or (t.is_floating_point() and t.dtype != dtype)
            or (channels_last and t.dim() == 4
                and not t.is_contiguous(memory_format=torch.channels_last)) for t in tensors)
        if needs_conversion:
            module = copy.deepcopy(module).to(device=device, dtype=dtype)
            if channels_last:
                module = module.to(memory_format=torch.channels_last)
        return module.eval()

    @property
    def module(self) -> nn.Module:
        """The module that runs (a converted copy when device or dtype had to change)."""
        return self._module

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._output_specs

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        bind_dynamic_sizes(self._input_specs, inputs, self.name)
        args = {}
        for spec in self._input_specs:
            tensor = inputs[spec.name].to(self._torch_device)
            if tensor.is_floating_point():
                tensor = tensor.to(self._compute_dtype)
            if self._channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            args[spec.name] = tensor
        if self.trace:
            return self._call_traced(args)
        with torch.inference_mode():
            result = self._module(**args)
        return self._named_outputs(result)

    @property
    def traced_shapes(self) -> list[tuple]:
        """The input shapes that run a traced graph (``((name, shape), …)`` each)."""
        return [key for key, graph in self._traced.items() if graph is not None]

    def _call_traced(self, args: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = tuple((name, tuple(t.shape)) for name, t in args.items())
        if key not in self._traced:
            batch = key[0][1][0]
            smaller = any(graph is not None and traced[0][1][0] > batch
                          for traced, graph in self._traced.items())
            # a batch smaller than a traced one is a clip's last, partial batch: run it
            # eagerly rather than trace again (slow) or pad it (up to batch× the work)
            self._traced[key] = None if smaller else self._make_trace(args)
        graph = self._traced[key]
        with torch.inference_mode():
            result = graph(**args) if graph is not None else self._module(**args)
        return self._named_outputs(result)

    def _make_trace(self, args: dict[str, torch.Tensor]) -> torch.jit.ScriptModule | None:
        """A frozen trace of the module for ``args``'s shapes (loaded from the trace cache when
        it holds one for the same key), or None (run eagerly)."""
        examples = {name: t.clone() for name, t in args.items()}  # normal tensors: traceable
        saved = None
        if self.trace_cache is not None:
            outputs = [spec.name for spec in self._output_specs]
            saved = self.trace_cache / f"{trace_key(self._module, examples, outputs)}.pt"
            graph = self._load_trace(saved)
            if graph is not None:
                return graph
        try:
            traced_module = copy.deepcopy(self._module).to(memory_format=torch.channels_last)
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                # the tracer's notes on shape checks that hold for every call of this shape, and
                # torch.jit's deprecation (in favour of torch.export); should a later torch drop
                # tracing, the exception below makes the engine run eagerly
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                graph = torch.jit.freeze(torch.jit.trace(
                    traced_module, example_kwarg_inputs=examples, check_trace=False).eval())
        except Exception as error:  # noqa: BLE001 - any tracing failure means: run eagerly
            self._warn_eager(f"cannot be traced ({_first_line(error)})", args)
            return None
        worst = self._trace_error(graph, examples)
        if worst > TRACE_TOLERANCE:
            self._warn_eager(f"its trace differs from the module by {worst:.2g}", args)
            return None
        if saved is not None:
            self._save_trace(graph, saved)
        return graph

    def _trace_error(self, graph: torch.jit.ScriptModule, examples: dict[str, torch.Tensor]
                     ) -> float:
        """The largest absolute difference between the module's and ``graph``'s outputs on
        ``examples``."""
        with torch.inference_mode(False), torch.no_grad():
            expected = self._named_outputs(self._module(**examples))
            got = self._named_outputs(graph(**examples))
        return max(float((got[name] - expected[name]).abs().max()) for name in expected)

    def _load_trace(self, path: Path) -> torch.jit.ScriptModule | None:
        """The saved graph at ``path`` if there is one, it loads and it carries its name's key
        (:data:`TRACE_KEY_FILE`); else None (it is traced anew and replaced)."""
        if not path.is_file():
            return None
        carried = {TRACE_KEY_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit's deprecation, as for tracing
                warnings.simplefilter("ignore", DeprecationWarning)
                graph = torch.jit.load(str(path), map_location=self._torch_device,
                                       _extra_files=carried)
        except Exception as error:  # noqa: BLE001 - an unreadable file is traced anew
            log.debug("%s: saved trace %s does not load (%s); tracing anew", self.name, path,
                      _first_line(error))
            return None
        key = carried[TRACE_KEY_FILE]
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if key != path.stem:
            log.debug("%s: saved trace %s carries another key (%r); tracing anew", self.name,
                      path, key[:16])
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: kept longest
        return graph

    def _save_trace(self, graph: torch.jit.ScriptModule, path: Path) -> None:
        """``graph`` saved at ``path`` (written beside it, then renamed: a reader never sees
        half a file), and the folder cut to its :data:`TRACES_KEPT` most recent graphs within
        :data:`TRACE_CACHE_BYTES` (this one always stays). A cache that cannot be written is
        passed over (logged at debug level)."""
        # one part file per writer: two engines (a preview and a render) may save one key
        part = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(graph, str(part), _extra_files={TRACE_KEY_FILE: path.stem})
            os.replace(part, path)
        except (OSError, RuntimeError) as error:
            log.debug("%s: cannot keep the trace in %s (%s)", self.name, path.parent,
                      _first_line(error))
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            return
        total = 0
        for rank, (other, size) in enumerate(_used_last_first(path.parent)):
            total += size
            if other != path and (rank >= TRACES_KEPT or total > TRACE_CACHE_BYTES):
                with contextlib.suppress(OSError):
                    other.unlink()

    def _warn_eager(self, why: str, args: dict[str, torch.Tensor]) -> None:
        """One warning line: this shape runs eagerly, far slower beside the pipeline's threads."""
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in args.items())
        log.warning("%s: %s for %s; it runs eagerly, many times slower while other threads run",
                    self.name, why, shapes)

    def _named_outputs(self, result: object) -> dict[str, torch.Tensor]:
        names = [spec.name for spec in self._output_specs]
        if isinstance(result, torch.Tensor):
            values: Sequence[torch.Tensor] = [result]
        elif isinstance(result, Mapping):
            if sorted(result) != sorted(names):
                raise ValueError(f"{self.name}: module returned {sorted(result)}, "
                                 f"specs name {names}")
            values = [result[name] for name in names]
        else:
            values = list(result)  # type: ignore[call-overload]
        if len(values) != len(names):
            raise ValueError(f"{self.name}: module returned {len(values)} outputs, "
                             f"specs name {len(names)}: {names}")
        return {spec.name: value.to(torch_dtype(spec.dtype))
                for spec, value in zip(self._output_specs, values, strict=True)}

    def __repr__(self) -> str:
        return f"TorchEngine({self.name!r}, device={self.device!r}, precision={self.precision!r})"


def _first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (tracer errors run to many lines)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _used_last_first(folder: Path) -> list[tuple[Path, int]]:
    """(file, bytes) of the traces saved in ``folder`` (named by a :func:`trace_key`: any
    other file there is not the cache's to remove), the one used last first (one stat a file;
    a file gone meanwhile is left out)."""
    found = []
    for path in folder.glob("*.pt"):
        if len(path.stem) != 64 or path.stem.strip("0123456789abcdef"):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((stat.st_mtime, path, stat.st_size))
    found.sort(key=lambda entry: entry[0], reverse=True)
    return [(path, size) for _, path, size in found]
