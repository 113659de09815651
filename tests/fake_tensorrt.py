"""A fake of the TensorRT 10 Python API that vidinv uses, and of the few ``torch.cuda`` calls
around it, for running the real ``build_engine`` and ``TrtEngine.__call__`` without a GPU.

It is a *checking* fake: it mirrors the real signatures and return conventions (``parse`` and
``set_input_shape`` return a bool, ``build_serialized_network`` and ``deserialize_cuda_engine``
return None on failure, an output's shape is -1 where an input shape is missing) and raises
:class:`ContractViolation` where real TensorRT would run into undefined behaviour or a silent
slowdown instead of an error:

* an output's shape read before every input shape is set;
* a buffer address that is not 256-byte aligned, or that lies outside any tensor's memory, or is
  too small for the tensor's shape at execution;
* a buffer whose dtype is not the engine's dtype for that tensor (fp16 vs fp32);
* ``execute_async_v3`` before every input shape is set and every tensor bound, on the legacy
  default stream (handle 0), on a stream other than torch's current one, or on an engine stream
  that has not waited for the caller's stream;
* ``all_binding_shapes_specified`` used with the name-based API (TensorRT 10 documents that it
  does not reflect ``set_input_shape``; ``infer_shapes()`` does).

Profile shapes are checked when the engine is built (``build_serialized_network`` returns None
for a missing or inconsistent profile) and when a shape is set (``set_input_shape`` returns False
outside min..max). "Execution" runs the ONNX model the engine was built from in ONNX Runtime on
the CPU, reading the inputs from and writing the outputs into the bound memory (rounded through
float16 when the engine was built with ``BuilderFlag.FP16``), so the outputs are real numbers to
compare with torch.

Device memory is host memory: CPU tensors stand in for CUDA tensors (:meth:`FakeCuda.install`
maps vidinv's CUDA device to the CPU). The alignment checked is that of the address within its
allocation (CUDA's allocations start 256-byte aligned, so on a GPU that is the address's own).
Every ``tensor.data_ptr()`` is recorded so that an address can be traced back to its memory.
The real signatures were taken from the TensorRT 10.16 bindings' docstrings.
"""

from __future__ import annotations

import contextlib
import enum
import json
import types
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

VERSION = "10.16.1.11"
ALIGNMENT = 256
_ENGINE_MAGIC = b"FAKETRT\x00"
_CACHE_MAGIC = b"FAKETC\x00\x00"


class ContractViolation(AssertionError):
    """A call that real TensorRT or CUDA would not catch (undefined behaviour, a race)."""


# ---------------------------------------------------------------------------------------------
# torch.cuda
# ---------------------------------------------------------------------------------------------


class FakeStream:
    """``torch.cuda.Stream``: a handle, and whom it has waited for."""

    def __init__(self, cuda: FakeCuda, handle: int) -> None:
        self._cuda = cuda
        self.cuda_stream = handle
        self.work = 0  # launches on this stream so far
        self.seen: dict[int, int] = {}  # stream handle -> its work count when last waited for

    def wait_stream(self, other: FakeStream) -> None:
        self._cuda.calls.append(("wait_stream", self.cuda_stream, other.cuda_stream))
        self.seen[other.cuda_stream] = other.work

    def wait_event(self, event: FakeEvent) -> None:
        self._cuda.calls.append(("wait_event", self.cuda_stream, event.stream))
        if event.stream is not None:
            self.seen[event.stream] = event.work

    def synchronize(self) -> None:
        self._cuda.calls.append(("stream_synchronize", self.cuda_stream))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeStream) and other.cuda_stream == self.cuda_stream

    def __hash__(self) -> int:
        return self.cuda_stream


class FakeEvent:
    """``torch.cuda.Event``: records a stream's work, synchronises the host with it."""

    def __init__(self, cuda: FakeCuda, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        self._cuda = cuda
        self.stream: int | None = None
        self.work = 0
        self.synchronized = False

    def record(self, stream: FakeStream | None = None) -> None:
        stream = stream or self._cuda.current_stream()
        self.stream, self.work = stream.cuda_stream, stream.work
        self.synchronized = False
        self._cuda.calls.append(("event_record", stream.cuda_stream))

    def synchronize(self) -> None:
        if self.stream is None:
            raise ContractViolation("Event.synchronize() before Event.record(): the host "
                                    "would not wait for anything")
        self.synchronized = True
        self._cuda.calls.append(("event_synchronize", self.stream))

    def query(self) -> bool:
        return True


class DeviceMemory:
    """Which tensor each address handed out by ``data_ptr()`` belongs to."""

    def __init__(self) -> None:
        self._by_address: dict[int, weakref.ref[torch.Tensor]] = {}

    def note(self, tensor: torch.Tensor, address: int) -> None:
        self._by_address[address] = weakref.ref(tensor)

    def tensor_at(self, address: int) -> torch.Tensor:
        ref = self._by_address.get(address)
        tensor = ref() if ref is not None else None
        if tensor is None:
            raise ContractViolation(f"address {address:#x} is not the data_ptr() of a live "
                                    "tensor: the memory may be freed or reused")
        return tensor

    def view(self, address: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """The memory at ``address`` as a contiguous ``dtype`` tensor of ``shape``, checked to
        lie inside the allocation."""
        storage = self.tensor_at(address).untyped_storage()
        base = storage.data_ptr()
        itemsize = torch.empty((), dtype=dtype).element_size()
        needed = int(np.prod(shape)) * itemsize
        if not base <= address or address + needed > base + storage.nbytes():
            raise ContractViolation(f"{needed} bytes at {address:#x} run past the end of their "
                                    f"allocation ({storage.nbytes()} bytes)")
        return torch.empty(0, dtype=dtype).set_(storage, (address - base) // itemsize,
                                                tuple(shape))

    def offset_in_allocation(self, address: int) -> int:
        return address - self.tensor_at(address).untyped_storage().data_ptr()


class FakeCuda:
    """The ``torch.cuda`` calls of vidinv's TensorRT and CUDA paths, recording each call."""

    def __init__(self, capability: tuple[int, int] = (9, 0),
                 name: str = "NVIDIA H100 80GB HBM3 (fake)", cuda: str = "13.0") -> None:
        self.capability = capability
        self.name = name
        self.cuda = cuda
        self.calls: list[tuple] = []
        self.memory = DeviceMemory()
        self._handles = iter(range(0x7F00, 0x7FFF))
        self.default_stream = FakeStream(self, 0)  # the legacy default stream
        self._current: list[FakeStream] = [self.default_stream]

    # --- the torch.cuda API -----------------------------------------------------------------
    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return 0

    def device_count(self) -> int:
        return 1

    def get_device_name(self, device: Any = None) -> str:
        return self.name

    def get_device_capability(self, device: Any = None) -> tuple[int, int]:
        return self.capability

    @contextlib.contextmanager
    def device(self, device: Any) -> Iterator[None]:
        yield

    def Stream(self, device: Any = None, priority: int = 0) -> FakeStream:  # noqa: N802
        stream = FakeStream(self, next(self._handles))
        self.calls.append(("new_stream", stream.cuda_stream))
        return stream

    def Event(self, enable_timing: bool = False, blocking: bool = False,  # noqa: N802
              interprocess: bool = False) -> FakeEvent:
        return FakeEvent(self, enable_timing, blocking, interprocess)

    def current_stream(self, device: Any = None) -> FakeStream:
        return self._current[-1]

    @contextlib.contextmanager
    def stream(self, stream: FakeStream) -> Iterator[None]:
        self._current.append(stream)
        try:
            yield
        finally:
            self._current.pop()

    def synchronize(self, device: Any = None) -> None:
        self.calls.append(("device_synchronize",))

    # --- checks -------------------------------------------------------------------------------
    def check_ready(self, reader: FakeStream, writer: int) -> None:
        """ContractViolation unless ``reader`` has waited for all of ``writer``'s launches."""
        stream = self._stream(writer)
        if reader.cuda_stream != writer and reader.seen.get(writer, -1) < stream.work:
            raise ContractViolation(f"stream {reader.cuda_stream:#x} reads results of stream "
                                    f"{writer:#x} without waiting for it")

    def _stream(self, handle: int) -> FakeStream:
        for stream in self._live_streams():
            if stream.cuda_stream == handle:
                return stream
        raise ContractViolation(f"{handle:#x} is not a stream made by torch.cuda.Stream")

    def _live_streams(self) -> list[FakeStream]:
        return [*self._current, *self._made]

    # --- installing --------------------------------------------------------------------------
    def install(self, monkeypatch: Any) -> FakeCuda:
        """Put this fake in place of ``torch.cuda``'s calls (for the test's duration), record
        every ``data_ptr()`` and ``record_stream()``, and run vidinv's CUDA device on the CPU."""
        from vidinv.engines import trt_engine

        self._made: list[FakeStream] = []
        make_stream = self.Stream

        def stream_factory(device: Any = None, priority: int = 0) -> FakeStream:
            stream = make_stream(device, priority)
            self._made.append(stream)
            return stream

        for name in ("is_available", "current_device", "device_count", "get_device_name",
                     "get_device_capability", "device", "Event", "current_stream", "stream",
                     "synchronize"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "Stream", stream_factory)
        monkeypatch.setattr(torch.version, "cuda", self.cuda)

        real_data_ptr = torch.Tensor.data_ptr
        memory = self.memory

        def data_ptr(tensor: torch.Tensor) -> int:
            address = real_data_ptr(tensor)
            memory.note(tensor, address)
            return address

        def record_stream(tensor: torch.Tensor, stream: Any) -> None:
            if not isinstance(stream, FakeStream):
                raise ContractViolation(f"record_stream({type(stream).__name__}): not a stream")
            self.calls.append(("record_stream", real_data_ptr(tensor), stream.cuda_stream))

        monkeypatch.setattr(torch.Tensor, "data_ptr", data_ptr)
        monkeypatch.setattr(torch.Tensor, "record_stream", record_stream)
        real_cuda_device = trt_engine.cuda_device

        def cpu_for_cuda(device: str = "cuda") -> torch.device:
            real_cuda_device(device)  # the real checks (type, availability) run
            return torch.device("cpu")

        monkeypatch.setattr(trt_engine, "cuda_device", cpu_for_cuda)
        return self


# ---------------------------------------------------------------------------------------------
# tensorrt
# ---------------------------------------------------------------------------------------------


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


_TORCH_OF = {DataType.FLOAT: torch.float32, DataType.HALF: torch.float16,
             DataType.INT8: torch.int8, DataType.INT32: torch.int32, DataType.BOOL: torch.bool,
             DataType.UINT8: torch.uint8, DataType.BF16: torch.bfloat16,
             DataType.INT64: torch.int64}
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32,
               9: DataType.BOOL, 2: DataType.UINT8, 16: DataType.BF16, 7: DataType.INT64}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class BuilderFlag(enum.Enum):
    FP16 = 0
    BF16 = 1
    INT8 = 2
    DEBUG = 3
    GPU_FALLBACK = 4
    REFIT = 5
    DISABLE_TIMING_CACHE = 6
    TF32 = 7
    STRICT_TYPES = 8


class NetworkDefinitionCreationFlag(enum.Enum):
    EXPLICIT_BATCH = 0  # deprecated and ignored in TensorRT 10
    STRONGLY_TYPED = 1


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class Logger:
    """``trt.Logger(min_severity)``; keeps what was logged at or above its severity."""

    Severity = Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = tuple(Severity)

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))


class IHostMemory:
    """Serialized bytes; ``bytes(memory)`` gives them (the real one has the buffer protocol)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.nbytes = len(self._data)

    def __bytes__(self) -> bytes:
        return self._data

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self._data)


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._dim_names: dict[str, list[str | None]] = {}

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class ParserError:
    def __init__(self, description: str) -> None:
        self._description = description

    def desc(self) -> str:
        return self._description

    def __str__(self) -> str:
        return f"In node -1 with name:  and operator:  (parse): {self._description}"


class OnnxParser:
    """``trt.OnnxParser(network, logger)``: fills the network's inputs and outputs."""

    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self._network = network
        self._logger = logger
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        if not isinstance(model, bytes | bytearray | memoryview):
            raise TypeError("parse(): incompatible function arguments: model must be a buffer")
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as error:  # noqa: BLE001 - the real parser reports, it does not raise
            self._errors.append(ParserError(f"Failed to parse ONNX model ({error})"))
            return False
        constants = {init.name for init in proto.graph.initializer}
        constants |= {out for node in proto.graph.node if node.op_type == "Constant"
                      for out in node.output}
        for node in proto.graph.node:
            if node.op_type == "ConvTranspose" and node.input[1] not in constants:
                self._errors.append(ParserError(
                    f"{node.name}: the weights of ConvTranspose must be an initializer"))
        if self._errors:
            return False

        def tensor(value: Any) -> tuple[ITensor, list[str | None]]:
            dims = value.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            names = [d.dim_param if d.HasField("dim_param") else None for d in dims]
            dtype = _ONNX_TYPES[value.type.tensor_type.elem_type]
            return ITensor(value.name, shape, dtype), names

        network = self._network
        for value in proto.graph.input:
            if value.name not in constants:
                made, names = tensor(value)
                network._inputs.append(made)
                network._dim_names[value.name] = names
        for value in proto.graph.output:
            made, names = tensor(value)
            network._outputs.append(made)
            network._dim_names[value.name] = names
        network._onnx = bytes(model)
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        self._valid = True

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int],  # noqa: A002
                  max: Sequence[int]) -> None:
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        if len({len(s) for s in shapes}) != 1 or not all(
                a <= b <= c for a, b, c in zip(*shapes, strict=True)):
            self._valid = False  # the real one logs an error and marks the profile invalid
        self._shapes[input] = shapes

    def get_shape(self, input: str) -> list[tuple[int, ...]]:  # noqa: A002
        return list(self._shapes.get(input, ()))

    def __bool__(self) -> bool:
        return self._valid


class ITimingCache:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def serialize(self) -> IHostMemory:
        return IHostMemory(_CACHE_MAGIC + json.dumps(self.data, sort_keys=True).encode())


class IBuilderConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self._fake = fake
        self.flags: set[BuilderFlag] = set()
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self._optimization_level = 3
        self._timing_cache: ITimingCache | None = None
        self.ignore_mismatch: bool | None = None

    @property
    def builder_optimization_level(self) -> int:
        return self._optimization_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        if not isinstance(level, int) or not 0 <= level <= 5:
            raise TypeError(f"builder_optimization_level must be an int in 0..5, got {level!r}")
        self._optimization_level = level

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if not isinstance(pool, MemoryPoolType) or not isinstance(pool_size, int):
            raise TypeError("set_memory_pool_limit(pool: MemoryPoolType, pool_size: int)")
        self.pool_limits[pool] = pool_size

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pool_limits.get(pool, 1 << 40)

    def set_flag(self, flag: BuilderFlag) -> None:
        if not isinstance(flag, BuilderFlag):
            raise TypeError(f"set_flag(): {flag!r} is not a BuilderFlag")
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache({"capability": list(self._fake.cuda.capability), "layers": 0})
        if not data.startswith(_CACHE_MAGIC):
            raise ContractViolation("create_timing_cache() got bytes that are not a timing "
                                    "cache")
        return ITimingCache(json.loads(data[len(_CACHE_MAGIC):]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.ignore_mismatch = ignore_mismatch
        if cache.data["capability"] != list(self._fake.cuda.capability) and not ignore_mismatch:
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing_cache

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    """``trt.Builder(logger)``."""

    def __init__(self, logger: Logger, fake: FakeTensorRT) -> None:
        self._logger = logger
        self._fake = fake
        self.platform_has_fast_fp16 = True

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self._fake.calls.append(("create_network", flags))
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._fake)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition,
                                 config: IBuilderConfig) -> IHostMemory | None:
        def fail(message: str) -> None:
            self._logger.log(Severity.ERROR, message)
            self._fake.calls.append(("build_failed", message))

        if network._onnx is None:
            return fail("the network is empty")
        dynamic = [t for t in network._inputs if -1 in t.shape]
        if dynamic and not config.profiles:
            return fail("Network has dynamic or shape inputs, but no optimization profile has "
                        "been defined.")
        profile: dict[str, list[list[int]]] = {}
        for tensor in network._inputs:
            shapes = config.profiles[0].get_shape(tensor.name) if config.profiles else []
            if not shapes:
                if tensor in dynamic:
                    return fail(f"{tensor.name}: dynamic input without profile shapes")
                shapes = [tensor.shape] * 3
            for shape in shapes:
                if len(shape) != len(tensor.shape) or any(
                        fixed != -1 and fixed != size
                        for fixed, size in zip(tensor.shape, shape, strict=True)):
                    return fail(f"{tensor.name}: profile shape {shape} does not fit "
                                f"{tensor.shape}")
            profile[tensor.name] = [list(s) for s in shapes]
        if config._timing_cache is not None:
            config._timing_cache.data["layers"] = len(network._inputs) + len(network._outputs)
        header = {
            "version": VERSION, "capability": list(self._fake.cuda.capability),
            "fp16": BuilderFlag.FP16 in config.flags, "profile": profile,
            "workspace": config.pool_limits.get(MemoryPoolType.WORKSPACE),
            "optimization_level": config.builder_optimization_level,
            "tensors": [{"name": t.name, "mode": mode.name, "dtype": t.dtype.name,
                         "shape": list(t.shape), "dims": network._dim_names[t.name]}
                        for mode, tensors in ((TensorIOMode.INPUT, network._inputs),
                                              (TensorIOMode.OUTPUT, network._outputs))
                        for t in tensors],
        }
        self._fake.calls.append(("build", header["fp16"], header["workspace"],
                                 header["optimization_level"]))
        text = json.dumps(header).encode()
        return IHostMemory(_ENGINE_MAGIC + len(text).to_bytes(8, "little") + text
                           + network._onnx)


class Runtime:
    """``trt.Runtime(logger)``."""

    def __init__(self, logger: Logger, fake: FakeTensorRT) -> None:
        self._logger = logger
        self._fake = fake

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(_ENGINE_MAGIC):
            self._logger.log(Severity.ERROR, "Magic tag does not match")
            return None
        size = int.from_bytes(data[8:16], "little")
        header = json.loads(data[16:16 + size])
        if header["version"] != VERSION:
            self._logger.log(Severity.ERROR, f"The engine plan file is not compatible with this "
                             f"version of TensorRT, expecting library version {VERSION} got "
                             f"{header['version']}")
            return None
        if tuple(header["capability"]) != self._fake.cuda.capability:
            self._logger.log(Severity.ERROR, "The engine plan file is generated on an "
                             "incompatible device")
            return None
        return ICudaEngine(header, data[16 + size:], self._fake)


class ICudaEngine:
    def __init__(self, header: dict[str, Any], onnx_bytes: bytes, fake: FakeTensorRT) -> None:
        self._header = header
        self._onnx = onnx_bytes
        self._fake = fake
        self._tensors = {t["name"]: t for t in header["tensors"]}
        self._names = [t["name"] for t in header["tensors"]]
        self._session = None

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def _tensor(self, name: str) -> dict[str, Any]:
        if name not in self._tensors:
            raise ContractViolation(f"the engine has no tensor {name!r}")
        return self._tensors[name]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self._tensor(name)["mode"]]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._tensor(name)["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensor(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if profile_index != 0 or self.get_tensor_mode(name) != TensorIOMode.INPUT:
            raise ContractViolation(f"get_tensor_profile_shape({name!r}, {profile_index})")
        return [tuple(s) for s in self._header["profile"][name]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime

        if self._session is None:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                self._onnx, options, providers=["CPUExecutionProvider"])
        names = [n for n in self._names if self.get_tensor_mode(n) == TensorIOMode.OUTPUT]
        return dict(zip(names, self._session.run(names, inputs), strict=True))


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._fake = engine._fake
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def _inputs(self) -> list[str]:
        return [n for n in self.engine._names
                if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        self._fake.calls.append(("set_input_shape", name, tuple(shape)))
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return False
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or not all(
                a <= s <= b for s, a, b in zip(shape, low, high, strict=True)):
            return False  # "… is out of the bounds of the optimization profile"
        self._shapes[name] = shape
        return True

    def infer_shapes(self) -> list[str]:
        """The names of the inputs whose dynamic dimensions have no size yet."""
        return [n for n in self._inputs()
                if n not in self._shapes and -1 in self.engine.get_tensor_shape(n)]

    @property
    def all_binding_shapes_specified(self) -> bool:
        raise ContractViolation("all_binding_shapes_specified does not reflect "
                                "set_input_shape() in TensorRT 10; use infer_shapes()")

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        self._fake.calls.append(("get_tensor_shape", name))
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self._shapes.get(name, self.engine.get_tensor_shape(name))
        missing = self.infer_shapes()
        if missing:
            raise ContractViolation(f"the shape of output {name!r} was read before the input "
                                    f"shapes of {missing} were set (TensorRT returns -1 there)")
        sizes = {}
        for input_name, shape in self._shapes.items():
            for dim_name, size in zip(self.engine._tensor(input_name)["dims"], shape,
                                      strict=True):
                if dim_name:
                    sizes[dim_name] = size
        tensor = self.engine._tensor(name)
        return tuple(sizes.get(dim_name, -1) if fixed == -1 else fixed
                     for fixed, dim_name in zip(tensor["shape"], tensor["dims"], strict=True))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._fake.calls.append(("set_tensor_address", name, memory))
        if name not in self.engine._tensors:
            return False
        memory_map = self._fake.cuda.memory
        offset = memory_map.offset_in_allocation(memory)
        if offset % ALIGNMENT:
            raise ContractViolation(f"the address of {name!r} is {offset % ALIGNMENT} bytes off "
                                    f"a {ALIGNMENT}-byte boundary")
        tensor = memory_map.tensor_at(memory)
        expected = _TORCH_OF[self.engine.get_tensor_dtype(name)]
        if tensor.dtype != expected:
            raise ContractViolation(f"{name!r} is bound to {tensor.dtype} memory; the engine "
                                    f"reads and writes it as {expected}")
        if not tensor.is_contiguous():
            raise ContractViolation(f"{name!r} is bound to a non-contiguous tensor")
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self._fake.cuda
        cuda.calls.append(("execute_async_v3", stream_handle))
        self._fake.calls.append(("execute_async_v3", stream_handle))
        if stream_handle == 0:
            raise ContractViolation("execute_async_v3 on the legacy default stream (0): it "
                                    "synchronises with every other stream")
        current = cuda.current_stream()
        if stream_handle != current.cuda_stream:
            raise ContractViolation(f"execute_async_v3 on stream {stream_handle:#x} while "
                                    f"torch's current stream is {current.cuda_stream:#x}: the "
                                    "allocator's record_stream bookkeeping is on another stream")
        engine_stream = cuda._stream(stream_handle)
        caller = cuda._current[-2] if len(cuda._current) > 1 else cuda.default_stream
        if engine_stream.seen.get(caller.cuda_stream, -1) < caller.work:
            raise ContractViolation("the engine's stream did not wait for the caller's stream: "
                                    "it could read the inputs before they are written")
        missing = self.infer_shapes()
        if missing:
            raise ContractViolation(f"execute_async_v3 before the shapes of {missing} were set")
        unbound = [n for n in self.engine._names if n not in self._addresses]
        if unbound:
            raise ContractViolation(f"execute_async_v3 with {unbound} not bound to memory")
        inputs = {}
        for name in self._inputs():
            dtype = _TORCH_OF[self.engine.get_tensor_dtype(name)]
            values = cuda.memory.view(self._addresses[name], self._shapes[name], dtype)
            array = values.float().numpy()
            if self.engine._header["fp16"]:
                array = array.astype(np.float16)
            inputs[name] = array.astype(np.float32)
        for name, array in self.engine.run(inputs).items():
            shape = self.get_tensor_shape(name)
            if tuple(array.shape) != shape:
                raise AssertionError(f"fake: ONNX Runtime gave {name} {array.shape}, the "
                                     f"context says {shape}")
            if self.engine._header["fp16"]:
                array = array.astype(np.float16).astype(np.float32)
            dtype = _TORCH_OF[self.engine.get_tensor_dtype(name)]
            cuda.memory.view(self._addresses[name], shape, dtype).copy_(
                torch.from_numpy(array))
        engine_stream.work += 1
        return True


class FakeTensorRT:
    """The ``tensorrt`` module: ``install`` puts it in ``sys.modules``."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.calls: list[tuple] = []

    def module(self) -> types.ModuleType:
        fake = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = VERSION
        for item in (DataType, TensorIOMode, MemoryPoolType, BuilderFlag,
                     NetworkDefinitionCreationFlag, Logger, OnnxParser, IHostMemory,
                     IOptimizationProfile, ITimingCache, IBuilderConfig, INetworkDefinition,
                     ICudaEngine, IExecutionContext):
            setattr(trt, item.__name__, item)
        trt.Builder = lambda logger: Builder(logger, fake)
        trt.Runtime = lambda logger: Runtime(logger, fake)
        return trt

    def install(self, monkeypatch: Any) -> FakeTensorRT:
        import sys

        from vidinv.engines import trt_engine

        monkeypatch.setitem(sys.modules, "tensorrt", self.module())
        trt_engine.trt_logger.cache_clear()
        monkeypatch.setattr(trt_engine, "trt_logger", _fresh_logger_cache())
        return self


def _fresh_logger_cache() -> Any:
    """A ``trt_logger`` of its own for the test, so no logger of the fake outlives it."""
    import functools

    from vidinv.engines.trt_engine import import_tensorrt

    @functools.cache
    def trt_logger() -> Any:
        trt = import_tensorrt()
        return trt.Logger(trt.Logger.WARNING)

    return trt_logger


def install(monkeypatch: Any, capability: tuple[int, int] = (9, 0)
            ) -> tuple[FakeTensorRT, FakeCuda]:
    """The fake ``tensorrt`` and ``torch.cuda`` in place for one test."""
    cuda = FakeCuda(capability).install(monkeypatch)
    return FakeTensorRT(cuda).install(monkeypatch), cuda
