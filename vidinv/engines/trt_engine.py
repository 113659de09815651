"""TensorRT engines built from ONNX files, with a verified on-disk cache.

Build once, offline (:func:`build_engine`): parse the ONNX file, one optimisation profile from
min/opt/max shapes, fp16 kernels allowed, a workspace limit; the serialized engine goes to
``<cache_dir>/<onnx stem>.<precision>.engine`` with a JSON sidecar ``....engine.json``.

The sidecar holds a cache key: the sha256 of the ONNX bytes, the profile shapes, the precision,
the TensorRT version and the GPU (name and compute capability) — everything a serialized engine
depends on. Loading (:class:`TrtEngine`) recomputes the key for *this* file, machine and request
and raises :class:`~vidinv.errors.EngineMismatchError` when it differs, naming what differs. It
never rebuilds on its own: a rebuild takes minutes and belongs in ``build_engine``, not in the
render loop. (``TrtEngine.from_onnx(..., build_missing=True)`` builds only when no engine exists.)

Inference uses torch CUDA tensors as TensorRT's I/O buffers (``set_tensor_address``). Each engine
runs on its own ``torch.cuda.Stream`` (never the legacy default stream, which would synchronise
with every other stream on each call): the engine's stream waits for the caller's current stream
before the launch, and the caller's stream waits for the engine's after it, so results are
ordered with the surrounding torch work without a host synchronisation, and engines called from
different threads can overlap. I/O stays float32 (as in the ONNX file); fp16 is internal.

TensorRT 10 only: TensorRT 11 removed ``BuilderFlag.FP16`` (weakly typed networks); its
strongly typed path (an fp16 ONNX graph) does not exist here yet, so 11 is refused with the fix.
A build keeps a timing cache next to the engines (``timing.<TensorRT>.<GPU>.cache``), so a second
build of the same layers skips kernel timing.

Everything above the ``TensorRT`` section of this file is pure Python and tested without a GPU;
``tensorrt`` is imported only when an engine is built or loaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from vidinv.engines.base import TensorSpec, bind_dynamic_sizes, torch_dtype
from vidinv.errors import (
    BackendUnavailableError,
    CheckpointError,
    EngineMismatchError,
    InputFileError,
)
from vidinv.io_safety import write_atomically

log = logging.getLogger(__name__)

TRT_INSTALL_HINT = "pip install 'vidinv[tensorrt]'"
_SIDECAR_FORMAT = 1
#: TensorRT's alignment for the address of every input and output buffer (bytes).
TENSOR_ALIGNMENT = 256
_DEFAULT_WORKSPACE_BYTES = 4 << 30

Shape = tuple[int, ...]
#: ``{input name: (min shape, opt shape, max shape)}`` — one TensorRT optimisation profile.
ProfileShapes = Mapping[str, tuple[Shape, Shape, Shape]]


# ---------------------------------------------------------------------------------------------
# Cache key and sidecar (pure Python)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKeyParts:
    """Everything a serialized TensorRT engine depends on; its sha256 is the cache key."""

    onnx_sha256: str
    profile: tuple[tuple[str, tuple[Shape, Shape, Shape]], ...]
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @property
    def key(self) -> str:
        """sha256 hex digest of the canonical JSON of all parts."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = {name: [list(s) for s in shapes] for name, shapes in self.profile}
        return data


def engine_key_parts(onnx_bytes: bytes, profile: ProfileShapes, precision: str,
                     tensorrt_version: str, gpu_name: str,
                     compute_capability: tuple[int, int]) -> EngineKeyParts:
    """Collect the parts of the cache key (see the module docstring)."""
    canonical_profile = tuple(
        (name, tuple(tuple(int(d) for d in shape) for shape in profile[name]))
        for name in sorted(profile))
    for name, shapes in canonical_profile:
        if len(shapes) != 3:
            raise ValueError(f"profile[{name!r}] must be (min, opt, max), got {shapes}")
    return EngineKeyParts(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        profile=canonical_profile,
        precision=precision,
        tensorrt_version=str(tensorrt_version),
        gpu_name=str(gpu_name),
        compute_capability=f"{compute_capability[0]}.{compute_capability[1]}",
    )


def engine_cache_key(onnx_bytes: bytes, profile: ProfileShapes, precision: str,
                     tensorrt_version: str, gpu_name: str,
                     compute_capability: tuple[int, int]) -> str:
    """The cache key: sha256 over ONNX bytes, profile shapes, precision, TensorRT and GPU."""
    return engine_key_parts(onnx_bytes, profile, precision, tensorrt_version, gpu_name,
                            compute_capability).key


def engine_paths(cache_dir: str | os.PathLike[str], onnx_path: str | os.PathLike[str],
                 precision: str, profile: ProfileShapes | None = None, *,
                 tensorrt_version: str | None = None,
                 compute_capability: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """(engine file, sidecar file) for an ONNX file.

    ``<stem>.<precision>.engine[.json]``; with a ``profile``, its batch range is in the name
    (``<stem>.<precision>.b1-4-8.engine``: min, opt, max of axis 0 of the first input), and with
    ``tensorrt_version`` and ``compute_capability`` the TensorRT and the GPU generation it was
    built by and for (``….b1-4-8.trt10.16.1.11.sm90.engine``), so engines for different batch
    sizes, TensorRT releases and GPUs live side by side and an upgrade never meets an old file.
    """
    tag = ""
    if profile:
        low, opt, high = profile[sorted(profile)[0]]
        tag = f".b{low[0]}-{opt[0]}-{high[0]}" if low else ""
    if tensorrt_version is not None:
        tag += f".trt{tensorrt_version}"
    if compute_capability is not None:
        tag += f".sm{compute_capability[0]}{compute_capability[1]}"
    engine = Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}{tag}.engine"
    return engine, engine.with_name(engine.name + ".json")


def timing_cache_path(cache_dir: str | os.PathLike[str], tensorrt_version: str,
                      gpu_name: str) -> Path:
    """``<cache_dir>/timing.<TensorRT version>.<GPU>.cache``: kernel timings kept between builds."""
    gpu = "".join(c if c.isalnum() else "_" for c in gpu_name).strip("_") or "gpu"
    return Path(cache_dir) / f"timing.{tensorrt_version}.{gpu}.cache"


def write_sidecar(path: str | os.PathLike[str], parts: EngineKeyParts) -> None:
    """Write the sidecar JSON (key, parts, build time) atomically."""
    record = {"format": _SIDECAR_FORMAT, "key": parts.key, "parts": parts.to_json(),
              "built_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_atomically(Path(path), (json.dumps(record, indent=2) + "\n").encode())


def verify_sidecar(engine_path: str | os.PathLike[str], expected: EngineKeyParts) -> None:
    """Raise EngineMismatchError unless the engine's sidecar holds ``expected.key``.

    The message names every part that differs (stored -> now) and how to rebuild.
    """
    engine_path = Path(engine_path)
    sidecar = engine_path.with_name(engine_path.name + ".json")
    fix = ("rebuild it: `vidinv engines build --rebuild` with the options of the run (or "
           f"delete {engine_path.name} and its .json to let the next start build it)")
    try:
        record = json.loads(sidecar.read_text())
        stored_key, stored_parts = record["key"], record["parts"]
    except FileNotFoundError:
        raise EngineMismatchError(f"{engine_path} has no sidecar {sidecar.name}, so what it was "
                                  f"built for is unknown; {fix}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineMismatchError(f"sidecar {sidecar} is unreadable ({type(exc).__name__}); "
                                  f"{fix}") from None
    if stored_key == expected.key:
        return
    now = expected.to_json()
    differing = [f"{part}: {_short(stored_parts.get(part))} -> {_short(value)}"
                 for part, value in now.items() if stored_parts.get(part) != value]
    what = "; ".join(differing) or "the key (sidecar edited?)"
    raise EngineMismatchError(f"{engine_path.name} was built for other inputs ({what}); {fix}")


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text[:12] if len(text) == 64 else text  # abbreviate sha256 digests


def batch_profile(input_specs: Sequence[TensorSpec], min_batch: int, opt_batch: int,
                  max_batch: int, batch_dim: str = "batch") -> dict[str, tuple[Shape, Shape,
                                                                                Shape]]:
    """A profile that varies only ``batch_dim``: every other dimension must be fixed.

    ``[TensorSpec("ws", ("batch", 18, 512))]``, 1, 1, 8 ->
    ``{"ws": ((1, 18, 512), (1, 18, 512), (8, 18, 512))}``.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                         f"{min_batch}, {opt_batch}, {max_batch}")
    profile = {}
    for spec in input_specs:
        other = [dim for dim in spec.shape if isinstance(dim, str) and dim != batch_dim]
        if other:
            raise ValueError(f"input {spec} has dynamic dims {other} besides {batch_dim!r}; "
                             "give the profile shapes explicitly")
        profile[spec.name] = tuple(spec.resolve({batch_dim: b})
                                   for b in (min_batch, opt_batch, max_batch))
    return profile  # type: ignore[return-value]


def pipeline_profile(input_specs: Sequence[TensorSpec], batch_size: int, max_batch: int,
                     batch_dim: str = "batch") -> dict[str, tuple[Shape, Shape, Shape]]:
    """The profile for a pipeline that sends batches of 1 to ``batch_size``: min 1, opt
    ``batch_size`` (the size of every full batch), max ``max(batch_size, max_batch)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_profile(input_specs, 1, batch_size, max(batch_size, max_batch), batch_dim)


def check_profile(profile: ProfileShapes, network_inputs: Mapping[str, Sequence[int]]) -> None:
    """Check a profile against the network's input shapes (-1 = dynamic).

    Every input needs an entry of the right rank, fixed dims must match, and min <= opt <= max.
    """
    missing = sorted(set(network_inputs) - set(profile))
    unknown = sorted(set(profile) - set(network_inputs))
    if missing or unknown:
        raise ValueError(f"profile names {sorted(profile)}, the network's inputs are "
                         f"{sorted(network_inputs)}")
    for name, net_shape in network_inputs.items():
        low, opt, high = profile[name]
        for shape in (low, opt, high):
            if len(shape) != len(net_shape) or any(
                    fixed != -1 and fixed != size
                    for fixed, size in zip(net_shape, shape, strict=True)):
                raise ValueError(f"profile shape {shape} for {name!r} does not fit the "
                                 f"network's {list(net_shape)}")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            raise ValueError(f"profile for {name!r} needs min <= opt <= max per axis, got "
                             f"{low}, {opt}, {high}")


def shape_fits_profile(shape: Sequence[int], low: Sequence[int], high: Sequence[int]) -> bool:
    """Whether ``low <= shape <= high`` on every axis (and the ranks agree)."""
    return len(shape) == len(low) == len(high) and all(
        a <= s <= b for s, a, b in zip(shape, low, high, strict=True))


# ---------------------------------------------------------------------------------------------
# TensorRT (needs tensorrt >= 10 and a CUDA device)
# ---------------------------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10.x, for torch's CUDA), or BackendUnavailableError with the
    fix."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed ({exc}); it needs an NVIDIA GPU with CUDA, then: "
            f"{TRT_INSTALL_HINT}") from exc
    check_tensorrt_version(str(tensorrt.__version__))
    check_cuda_stack(torch.version.cuda, tensorrt_cuda_majors())
    return tensorrt


def tensorrt_requirement(cuda: str | None = None) -> str:
    """The TensorRT 10 requirement for a torch built for CUDA ``cuda`` (default: this torch's):
    ``tensorrt-cu13>=10.13.2,<11`` for CUDA 13 (10.13.2 is the first TensorRT 10 built for it),
    ``tensorrt-cu12>=10,<11`` for CUDA 12."""
    cuda = cuda if cuda is not None else torch.version.cuda
    major = int(cuda.split(".")[0]) if cuda else 13
    return f"tensorrt-cu{major}>=10.13.2,<11" if major >= 13 else f"tensorrt-cu{major}>=10,<11"


def tensorrt_cuda_majors() -> set[int]:
    """The CUDA major versions of the installed TensorRT wheels that provide ``tensorrt``.

    TensorRT has no run-time call for its CUDA version; its pip wheels say it in their names:
    ``tensorrt-cu13`` (the ``tensorrt`` module), ``tensorrt-cu13-bindings``
    (``tensorrt_bindings``, the compiled module) and ``tensorrt-cu13-libs`` (``tensorrt_libs``).
    Empty when TensorRT did not come from such wheels (a tar file, a container's system copy).
    """
    import importlib.metadata
    import re

    owners = importlib.metadata.packages_distributions()
    names = [dist for module in ("tensorrt", "tensorrt_bindings", "tensorrt_libs")
             for dist in owners.get(module, [])]
    return {int(match.group(1)) for name in names
            if (match := re.fullmatch(r"tensorrt[-_]cu(\d+)(?:[-_](?:bindings|libs))?",
                                      name.lower()))}


def check_cuda_stack(torch_cuda: str | None, tensorrt_majors: set[int]) -> None:
    """BackendUnavailableError (one line, naming the package) unless torch and TensorRT are
    built for the same CUDA major version: two CUDA runtimes in one process need the newer
    one's driver and share no memory pools. Nothing to check without a CUDA torch (the device
    check says so) or when TensorRT's CUDA is unknown (:func:`tensorrt_cuda_majors`)."""
    if not torch_cuda or not tensorrt_majors:
        return
    major = int(torch_cuda.split(".")[0])
    wrong = sorted(tensorrt_majors - {major})
    if not wrong:
        return
    stale = " ".join(f"tensorrt-cu{m} tensorrt-cu{m}-bindings tensorrt-cu{m}-libs"
                     for m in wrong)
    if major in tensorrt_majors:
        raise BackendUnavailableError(
            f"TensorRT wheels for CUDA {' and '.join(map(str, sorted(tensorrt_majors)))} are "
            f"installed together and overwrite each other; torch is built for CUDA {torch_cuda}: "
            f"pip uninstall -y {stale} && pip install --force-reinstall "
            f"'{tensorrt_requirement(torch_cuda)}'")
    raise BackendUnavailableError(
        f"torch is built for CUDA {torch_cuda} but TensorRT for CUDA {wrong[0]} (two CUDA "
        f"runtimes in one process); install the TensorRT for torch's CUDA: pip uninstall -y "
        f"{stale} && pip install '{tensorrt_requirement(torch_cuda)}'")


def check_tensorrt_version(version: str) -> None:
    """Accept TensorRT 10.x only; BackendUnavailableError with the fix otherwise."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise BackendUnavailableError(f"cannot read the TensorRT version {version!r}; "
                                      f"reinstall it: {TRT_INSTALL_HINT}") from None
    if major < 10:
        raise BackendUnavailableError(f"TensorRT {version} is too old (need 10.x): "
                                      f"{TRT_INSTALL_HINT}")
    if major > 10:
        raise BackendUnavailableError(
            f"TensorRT {version} is not supported yet: TensorRT 11 dropped the weakly typed fp16 "
            f"builds vidinv uses; install TensorRT 10 with: pip install '{tensorrt_requirement()}' "
            f"(or {TRT_INSTALL_HINT})")


@functools.cache
def trt_logger() -> Any:
    """The process's one TensorRT logger (TensorRT wants a single logger per process)."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def cuda_device(device: str = "cuda") -> torch.device:
    """The CUDA torch.device for ``device``, or BackendUnavailableError without CUDA."""
    resolved = torch.device(device)
    if resolved.type != "cuda":
        raise BackendUnavailableError(f"TensorRT runs on an NVIDIA GPU: use device='cuda', not "
                                      f"{device!r}")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT needs an NVIDIA GPU and a CUDA build of torch, and no CUDA device is "
            f"usable here; on a machine with one: {TRT_INSTALL_HINT}")
    return torch.device("cuda", resolved.index if resolved.index is not None
                        else torch.cuda.current_device())


def current_key_parts(onnx_path: Path, profile: ProfileShapes, precision: str,
                      device: torch.device, trt: Any) -> EngineKeyParts:
    """The key parts for this ONNX file, request, TensorRT install and GPU."""
    if not onnx_path.is_file():
        raise InputFileError(f"ONNX file not found: {onnx_path}; export it first "
                             "(vidinv.engines.export_generator)")
    return engine_key_parts(onnx_path.read_bytes(), profile, precision, trt.__version__,
                            torch.cuda.get_device_name(device),
                            torch.cuda.get_device_capability(device))


def build_engine(onnx_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
                 profile: ProfileShapes, precision: str = "fp16",
                 workspace_bytes: int = _DEFAULT_WORKSPACE_BYTES,
                 device: str = "cuda", optimization_level: int | None = None) -> Path:
    """Build a TensorRT engine from an ONNX file into ``cache_dir``; returns the engine path.

    Overwrites an existing engine for the same ONNX stem, precision and batch range (engine
    first, then the sidecar, both atomically: a crash in between leaves an engine without a
    sidecar, which :class:`TrtEngine` refuses). Reads and updates the timing cache in
    ``cache_dir`` (:func:`timing_cache_path`). ``optimization_level`` (0-5, TensorRT's default
    3) trades build time for kernel choice. Takes seconds to minutes.
    """
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
    if optimization_level is not None and not 0 <= optimization_level <= 5:
        raise ValueError(f"optimization_level must be 0..5, got {optimization_level}")
    trt = import_tensorrt()
    torch_device = cuda_device(device)
    onnx_path = Path(onnx_path)
    parts = current_key_parts(onnx_path, profile, precision, torch_device, trt)
    engine_path, sidecar_path = engine_paths(
        cache_dir, onnx_path, precision, profile, tensorrt_version=trt.__version__,
        compute_capability=torch.cuda.get_device_capability(torch_device))
    timing_path = timing_cache_path(cache_dir, trt.__version__, parts.gpu_name)

    logger = trt_logger()
    with torch.cuda.device(torch_device):
        builder = trt.Builder(logger)
        # TensorRT 10 networks are always explicit-batch (the EXPLICIT_BATCH flag is deprecated
        # and ignored); no STRONGLY_TYPED flag, so BuilderFlag.FP16 may pick half kernels.
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].splitlines()[0] if errors else "unknown error"
            raise CheckpointError(f"TensorRT could not parse {onnx_path} ({first}); "
                                  "re-export it with vidinv.engines.export_onnx")
        network_inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
                          for i in range(network.num_inputs)}
        check_profile(profile, network_inputs)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        if optimization_level is not None:
            config.builder_optimization_level = int(optimization_level)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        timing_cache = config.create_timing_cache(
            timing_path.read_bytes() if timing_path.is_file() else b"")
        if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
            # made on another device or driver: start a fresh one (replaced after the build)
            log.info("the timing cache %s does not fit this GPU; starting a new one",
                     timing_path.name)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        optimization_profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            optimization_profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
        config.add_optimization_profile(optimization_profile)

        log.info("building TensorRT %s engine for %s (this takes a while)", precision,
                 onnx_path.name)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see the "
                               "TensorRT log above")
        write_atomically(timing_path, bytes(config.get_timing_cache().serialize()))
    write_atomically(engine_path, bytes(serialized))
    write_sidecar(sidecar_path, parts)
    log.info("wrote %s (key %s)", engine_path, parts.key[:12])
    return engine_path


class TrtEngine:
    """A built TensorRT engine behind the :class:`~vidinv.engines.base.Engine` interface.

    Args:
        engine_path: the ``.engine`` file written by :func:`build_engine`.
        onnx_path: the ONNX file it was built from (hashed for the key; its graph gives the
            specs, with the names of the dynamic dimensions).
        profile: the min/opt/max shapes the caller expects the engine to have been built for.
        precision: ``"fp16"`` (default) or ``"fp32"``.
        device: ``"cuda"`` or ``"cuda:N"``.

    Raises:
        BackendUnavailableError: no tensorrt or no CUDA.
        EngineMismatchError: the engine was built for another ONNX file, profile, precision,
            TensorRT version or GPU (the message says which).

    One engine has one execution context and one CUDA stream: call it from one thread at a
    time (engines of different stages may run in different threads at once).
    """

    def __init__(self, engine_path: str | os.PathLike[str], *,
                 onnx_path: str | os.PathLike[str], profile: ProfileShapes,
                 precision: str = "fp16", device: str = "cuda",
                 name: str | None = None) -> None:
        from vidinv.engines.onnx_export import read_onnx_specs

        trt = import_tensorrt()
        torch_device = cuda_device(device)
        engine_path, onnx_path = Path(engine_path), Path(onnx_path)
        if not engine_path.is_file():
            raise InputFileError(f"TensorRT engine not found: {engine_path}; build it with "
                                 "`vidinv engines build`")
        verify_sidecar(engine_path,
                       current_key_parts(onnx_path, profile, precision, torch_device, trt))
        input_specs, output_specs = read_onnx_specs(onnx_path)

        with torch.cuda.device(torch_device):
            self._runtime = trt.Runtime(trt_logger())
            self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self._engine is None:
                raise EngineMismatchError(f"TensorRT could not deserialize {engine_path}; "
                                          "rebuild it with `vidinv engines build`")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(torch_device)

        engine_names = {self._engine.get_tensor_name(i)
                        for i in range(self._engine.num_io_tensors)}
        spec_names = {spec.name for spec in input_specs + output_specs}
        if engine_names != spec_names:
            raise EngineMismatchError(f"{engine_path.name} has tensors {sorted(engine_names)}, "
                                      f"{onnx_path.name} has {sorted(spec_names)}; rebuild it "
                                      "with `vidinv engines build --rebuild`")
        for specs, mode in ((input_specs, trt.TensorIOMode.INPUT),
                            (output_specs, trt.TensorIOMode.OUTPUT)):
            for spec in specs:
                if self._engine.get_tensor_mode(spec.name) != mode:
                    raise EngineMismatchError(
                        f"{engine_path.name}: {spec.name} is not an {mode.name.lower()} of the "
                        "engine; rebuild it with `vidinv engines build --rebuild`")
        self._bounds = {}
        for spec in input_specs:
            low, _, high = self._engine.get_tensor_profile_shape(spec.name, 0)
            self._bounds[spec.name] = (tuple(low), tuple(high))
        self._trt = trt
        self._torch_device = torch_device
        self._input_specs = input_specs
        self._output_specs = output_specs
        self._io_dtypes = {name: _torch_dtype_of(trt, self._engine.get_tensor_dtype(name))
                           for name in engine_names}
        self.device = str(torch_device)
        self.precision = precision
        self.name = name or f"{onnx_path.stem} (tensorrt {precision})"

    @classmethod
    def from_onnx(cls, onnx_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
                  profile: ProfileShapes, precision: str = "fp16", device: str = "cuda",
                  build_missing: bool = True,
                  workspace_bytes: int = _DEFAULT_WORKSPACE_BYTES,
                  optimization_level: int | None = None, rebuild: bool = False) -> TrtEngine:
        """Load the cached engine for ``onnx_path``, ``profile``, this TensorRT and this GPU
        (:func:`engine_paths`); build it first if none exists (``build_missing``), or always
        (``rebuild``: replaces the cached engine, whatever it was built for).

        Without ``rebuild`` an existing engine built for anything else raises
        EngineMismatchError naming ``vidinv engines build --rebuild``.
        """
        trt = import_tensorrt()  # say what is missing before anything else
        torch_device = cuda_device(device)
        engine_path, _ = engine_paths(
            cache_dir, onnx_path, precision, profile, tensorrt_version=trt.__version__,
            compute_capability=torch.cuda.get_device_capability(torch_device))
        if rebuild or not engine_path.is_file():
            if not (build_missing or rebuild):
                raise InputFileError(f"no TensorRT engine at {engine_path}; build it with "
                                     "`vidinv engines build`")
            build_engine(onnx_path, cache_dir, profile, precision, workspace_bytes, device,
                         optimization_level)
        return cls(engine_path, onnx_path=onnx_path, profile=profile, precision=precision,
                   device=device)

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._output_specs

    def check_batch(self, batch_size: int, batch_dim: str = "batch") -> None:
        """EngineMismatchError unless every batch from 1 to ``batch_size`` fits the profile.

        Called when the engine is made, so a too-small profile fails at start, not on the
        first full batch.
        """
        for spec in self._input_specs:
            low, high = self._bounds[spec.name]
            for axis, dim in enumerate(spec.shape):
                if dim == batch_dim and not low[axis] <= 1 <= batch_size <= high[axis]:
                    raise EngineMismatchError(
                        f"{self.name}: the engine's profile takes batches {low[axis]}.."
                        f"{high[axis]} of {spec.name}, the pipeline sends 1..{batch_size}; "
                        "rebuild it with `vidinv engines build --batch "
                        f"{batch_size}`")

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        bind_dynamic_sizes(self._input_specs, inputs, self.name)
        context = self._context
        with torch.cuda.device(self._torch_device):
            caller = torch.cuda.current_stream(self._torch_device)
            bound = []  # converted inputs, made on the caller's stream
            for spec in self._input_specs:
                tensor = inputs[spec.name].detach().to(
                    device=self._torch_device, dtype=self._io_dtypes[spec.name]).contiguous()
                if tensor.data_ptr() % TENSOR_ALIGNMENT:
                    # a view into a larger tensor (a slice of a batch): TensorRT needs its
                    # buffers 256-byte aligned, which only a fresh allocation guarantees
                    tensor = tensor.clone()
                low, high = self._bounds[spec.name]
                if not shape_fits_profile(tensor.shape, low, high):
                    raise ValueError(f"{self.name}: {spec.name} shape {list(tensor.shape)} is "
                                     f"outside the engine's profile {list(low)}..{list(high)}; "
                                     "rebuild it with `vidinv engines build --batch N`")
                bound.append(tensor)
            # The engine's stream starts once the caller's work (the inputs) is done.
            self._stream.wait_stream(caller)
            with torch.cuda.stream(self._stream):
                for spec, tensor in zip(self._input_specs, bound, strict=True):
                    # the allocator must not reuse an input's memory before the engine has read it
                    tensor.record_stream(self._stream)
                    if not context.set_input_shape(spec.name, tuple(tensor.shape)):
                        raise EngineMismatchError(
                            f"{self.name}: TensorRT refused the shape {list(tensor.shape)} of "
                            f"{spec.name}; rebuild it with `vidinv engines build --rebuild`")
                    self._bind(spec.name, tensor)
                outputs = {}
                for spec in self._output_specs:
                    shape = tuple(context.get_tensor_shape(spec.name))
                    if any(size < 0 for size in shape):
                        raise RuntimeError(f"{self.name}: TensorRT left the shape of "
                                           f"{spec.name} open ({list(shape)})")
                    out = torch.empty(shape, dtype=self._io_dtypes[spec.name],
                                      device=self._torch_device)
                    self._bind(spec.name, out)
                    outputs[spec.name] = out
                if not context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError(f"{self.name}: TensorRT execution failed; see its log")
            # The caller's later work waits for the engine, and the outputs belong to it now.
            caller.wait_stream(self._stream)
            for out in outputs.values():
                out.record_stream(caller)
            return {spec.name: outputs[spec.name].to(torch_dtype(spec.dtype))
                    for spec in self._output_specs}

    def _bind(self, name: str, tensor: torch.Tensor) -> None:
        if not self._context.set_tensor_address(name, tensor.data_ptr()):
            raise RuntimeError(f"{self.name}: TensorRT refused the buffer of {name}; see its log")

    def __repr__(self) -> str:
        return f"TrtEngine({self.name!r}, device={self.device!r})"


def _torch_dtype_of(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BF16: torch.bfloat16}
    try:
        return table[dtype]
    except KeyError:
        raise EngineMismatchError(f"TensorRT tensor type {dtype} is not supported") from None
