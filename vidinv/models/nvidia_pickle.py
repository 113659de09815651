"""Read NVIDIA StyleGAN2-ADA network pickles without executing any pickled code.

An NVIDIA ``network-snapshot-*.pkl`` is a plain ``pickle.dump`` of
``{G, D, G_ema, training_set_kwargs, augment_pipe}``. Every network in it is a
``@persistent_class`` object, pickled as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the
Python source of ``training/networks.py`` (``module_src``) and the module's ``__dict__``
(``state``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``, ...).
The reference loader ``exec``s ``module_src``; this one never does. A restricted unpickler
resolves only an explicit allow-list of globals, turns each persistent object into a
:class:`PersistentObject` (class name + state dict), and reads tensor storages with
``torch.load(..., weights_only=True)``.

:func:`load_nvidia_generator_state` returns the generator's constructor kwargs and its
tensors by dotted module path; :func:`nvidia_to_rosinality` renames those tensors to the
rosinality stylegan2-pytorch layout (the ``g_ema`` dict its ``convert_weight.py`` writes).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidinv.errors import CheckpointError, UnsafePickleError
from vidinv.models.safe_load import (
    byte_budget,
    check_legacy_storages,
    check_view,
    is_legacy_torch_file,
)

__all__ = [
    "NvidiaGeneratorState",
    "PersistentObject",
    "RestrictedUnpickler",
    "load_nvidia_generator_state",
    "nvidia_to_rosinality",
]


# ----------------------------------------------------------------------------------------------
# Stand-ins for the pickled globals.


@dataclass(frozen=True, slots=True)
class PersistentObject:
    """One unpickled NVIDIA ``@persistent_class`` instance, as data.

    ``class_name`` is the original class name (e.g. ``'Generator'``; the pickle records the
    bare name, the module only as source text) and ``state`` the pickled ``__dict__`` of the
    ``torch.nn.Module``. ``slots=True`` leaves no ``__dict__`` for a crafted BUILD opcode to
    rewrite.
    """

    class_name: str
    state: dict[str, Any]
    version: int | None = None


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``.

    Reads ``meta['class_name']`` and ``meta['state']``; ``meta['module_src']`` is ignored
    (the reference implementation ``exec``s it).
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"persistent object metadata is a {type(meta).__name__}, not a dict")
    if meta.get("type") != "class":
        raise CheckpointError(f"persistent object of unsupported type {meta.get('type')!r}")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointError("persistent object metadata lacks a class_name string or state dict")
    version = meta.get("version")
    return PersistentObject(class_name, dict(state), version if isinstance(version, int) else None)


_GLOBAL_IN_TORCH_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _storage_from_bytes(data: Any) -> torch.TypedStorage:
    """Replacement for ``torch.storage._load_from_bytes``.

    A plainly pickled tensor stores its storage as ``_load_from_bytes(torch.save(storage))``
    (legacy, non-zip format) and the original calls ``torch.load(..., weights_only=False)``.
    Here the bytes go through the weights-only unpickler, so a crafted payload is refused.
    """
    if not isinstance(data, bytes | bytearray):
        raise CheckpointError(f"tensor storage payload is a {type(data).__name__}, not bytes")
    # Storage.__reduce__ always writes the legacy format, and torch allocates a legacy storage
    # at its declared size before reading it: bound that by the payload's own length first
    # (one small file may hold thousands of payloads). A zip payload is never genuine.
    if bytes(data[:4]) == b"PK\x03\x04":
        raise CheckpointError("a tensor storage payload is a zip archive; the file is not a "
                              "genuine NVIDIA pickle")
    if is_legacy_torch_file(bytes(data[:16])):
        check_legacy_storages(bytes(data), "a tensor storage")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _GLOBAL_IN_TORCH_MESSAGE.search(str(error))
        what = f"global {found.group(1)}" if found else "content"
        raise UnsafePickleError(
            f"a tensor storage holds a {what} that torch.load(weights_only=True) refuses; "
            "the file is not a genuine NVIDIA pickle"
        ) from None
    except Exception as error:  # any failure here means a corrupt payload
        raise CheckpointError(
            f"a tensor storage could not be read ({type(error).__name__}); the file is corrupt"
        ) from None
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError(f"a tensor storage payload holds a {type(storage).__name__}")
    return storage


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Replacement for ``torch._utils._rebuild_tensor_v2`` (and v1): a plain CPU tensor.

    Hooks, ``requires_grad`` and metadata are dropped. Unlike torch's own rebuild (which does
    not check, torch 2.13), the view is bounds-checked against the storage.
    """
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError(f"a tensor is built on a {type(storage).__name__}, not a storage")
    if not (isinstance(storage_offset, int) and _is_int_tuple(size) and _is_int_tuple(stride)):
        raise CheckpointError("a tensor has a malformed offset, size or stride")
    if len(size) != len(stride) or storage_offset < 0 or min((*size, *stride), default=0) < 0:
        raise CheckpointError("a tensor has a malformed offset, size or stride")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation notices
        untyped, numel = storage.untyped(), storage.size()
    if all(size):  # non-empty: the furthest element must lie inside the storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= numel:
            raise CheckpointError("a tensor reaches past the end of its storage; file is corrupt")
    tensor = torch.empty((0,), dtype=storage.dtype)
    tensor = tensor.set_(untyped, storage_offset, tuple(size), tuple(stride))
    check_view(tensor, "a tensor")  # no stride-0 or overlapping view: .contiguous() is bounded
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any = False, *ignored: Any) -> torch.Tensor:
    """Replacement for ``torch._utils._rebuild_parameter[_with_state]``: the plain tensor."""
    del requires_grad, ignored
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Replacement for ``numpy.(_)core.multiarray.scalar``: a plain Python number.

    NVIDIA modules keep gains such as ``act_gain = np.sqrt(2)`` as numpy scalars.
    """
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError(f"a numpy scalar has an unsupported dtype {dtype!r}")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise CheckpointError("a numpy scalar has a malformed payload")
    return np.frombuffer(data, dtype=dtype)[0].item()


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``'s subtype argument.

    The real class is never handed out: called directly, ``np.ndarray(shape, dtype, buffer,
    offset, strides)`` builds stride-0 views of any size over a few bytes.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("the pickle applies state to numpy.ndarray itself")


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    """Replacement for ``numpy.(_)core.multiarray._reconstruct``: an empty ndarray that the
    following BUILD fills through ``ndarray.__setstate__`` (numpy's own C code, which checks
    that the data bytes match the declared shape)."""
    del shape, dtype_code
    if not isinstance(subtype, _NdarrayToken):
        raise CheckpointError("a numpy array of an unsupported subclass")
    return np.ndarray((0,), dtype=np.uint8)


def _numpy_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """Replacement for ``numpy.dtype`` (pickled as ``dtype('f4', False, True)`` + BUILD): always
    a fresh copy, so the BUILD that follows can never reach numpy's shared builtin dtypes;
    object dtypes are refused."""
    del copy
    if not isinstance(obj, str) or not isinstance(align, bool):
        raise CheckpointError(f"a numpy dtype of unsupported form {obj!r}")
    try:
        dtype = np.dtype(obj, align=align, copy=True)
    except (TypeError, ValueError):
        raise CheckpointError(f"a numpy dtype {obj!r} that numpy does not know") from None
    if dtype.hasobject:
        raise CheckpointError("a numpy array of Python objects; refused")
    return dtype


# (module, name) -> what the unpickler returns for it; anything else raises UnsafePickleError.
# A plain pickle.dump of a CPU tensor (torch 1.x and 2.13 alike) is
#   torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(<legacy torch.save of the
#   storage>), offset, size, stride, requires_grad, collections.OrderedDict())
# and of an nn.Parameter torch._utils._rebuild_parameter(<that tensor>, requires_grad,
# OrderedDict()). Storage classes (torch.FloatStorage, ...) only occur inside the
# _load_from_bytes payload, where torch's weights-only unpickler resolves them.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    # EasyDict is a dict subclass, pickled through NEWOBJ + SETITEMS (protocol >= 2).
    ("dnnlib.util", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Protocol 3 (the default of Python 3.7, which the reference code targets) writes a set
    # such as Module._non_persistent_buffers_set as builtins.set([...]).
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the Python one, for BUILD
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS` and never runs pickled code.

    BUILD (apply state to the object on the stack) is allowed only on the numpy arrays and
    dtypes this unpickler has just built (numpy's own ``__setstate__`` fills them, checking the
    data against the shape), or with empty state. Applied to an allow-listed function or class
    it would change that global for the rest of the process; applied to a tensor,
    ``Tensor.__setstate__`` would re-view its storage past the bounds check. The pure-Python
    unpickler is used because the C one offers no hook for BUILD; the bulk of an NVIDIA pickle
    is a few large byte strings, so it is not slower in practice.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def _load_build(self) -> None:
        state, target = self.stack[-1], self.stack[-2]
        empty = state is None or (isinstance(state, dict) and not state) or (
            isinstance(state, tuple) and len(state) == 2
            and all(part is None or (isinstance(part, dict) and not part) for part in state))
        if not empty and not isinstance(target, np.ndarray | np.dtype):
            raise UnsafePickleError(f"the pickle applies state to a {type(target).__name__}; "
                                    "only numpy arrays take state")
        pickle._Unpickler.load_build(self)  # noqa: SLF001

    dispatch[pickle.BUILD[0]] = _load_build

    # --- nesting depth: a tuple nested 200 000 deep is a few hundred kB of pickle, and hashing
    # it (as a dict key) recurses in C until the stack overflows (a segfault, not an
    # exception). Every container built here gets a depth (1 + its deepest item's), and one
    # deeper than MAX_NESTING stops the load at once.

    def _depth(self, value: Any) -> int:
        return self._depths.get(id(value), (0, None))[0]

    def _deepen(self, container: Any, items: Any) -> None:
        depth = 1 + max((self._depth(item) for item in items), default=0)
        if depth > MAX_NESTING:
            raise CheckpointError(f"values nested too deeply (more than {MAX_NESTING} "
                                  "levels); corrupt or crafted")
        if depth > self._depth(container):
            self._depths[id(container)] = (depth, container)  # kept alive: ids stay unique

    def _after(opcode: bytes, items_of: Any) -> Any:
        """Wrap the dispatch entry of ``opcode``: note the depth of what it built or filled.
        ``items_of(self)`` says, before the opcode runs, which items it will put in."""
        original = pickle._Unpickler.dispatch[opcode[0]]  # noqa: SLF001

        def load(self: RestrictedUnpickler) -> None:
            items = items_of(self)
            original(self)
            self._deepen(self.stack[-1], items)

        return load

    for _opcode, _items in (
        (pickle.TUPLE, lambda self: list(self.stack)),          # items since the MARK
        (pickle.TUPLE1, lambda self: self.stack[-1:]),
        (pickle.TUPLE2, lambda self: self.stack[-2:]),
        (pickle.TUPLE3, lambda self: self.stack[-3:]),
        (pickle.LIST, lambda self: list(self.stack)),
        (pickle.DICT, lambda self: list(self.stack)),
        (pickle.FROZENSET, lambda self: list(self.stack)),
        (pickle.APPEND, lambda self: self.stack[-1:]),
        (pickle.APPENDS, lambda self: list(self.stack)),
        (pickle.SETITEM, lambda self: self.stack[-2:]),
        (pickle.SETITEMS, lambda self: list(self.stack)),
        (pickle.ADDITEMS, lambda self: list(self.stack)),
        (pickle.REDUCE, lambda self: self.stack[-1:]),           # the arguments tuple
        (pickle.NEWOBJ, lambda self: self.stack[-1:]),
    ):
        dispatch[_opcode[0]] = _after(_opcode, _items)
    del _opcode, _items

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._depths: dict[int, tuple[int, Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is _NdarrayToken:
            return _NdarrayToken()
        if allowed is not None:
            return allowed
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = " (a TensorFlow StyleGAN pickle; convert it with NVIDIA's legacy.py first)"
        raise UnsafePickleError(f"refused global {module}.{name}{hint}")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("pickle uses persistent ids (a torch.save file?), not an NVIDIA pkl")


# ----------------------------------------------------------------------------------------------
# Loading.


@dataclass
class NvidiaGeneratorState:
    """The generator from an NVIDIA pickle, as plain data.

    init_kwargs: the network's ``_init_kwargs`` as plain Python values (``z_dim``, ``c_dim``,
        ``w_dim``, ``img_resolution``, ``img_channels``, ``mapping_kwargs``,
        ``synthesis_kwargs`` with ``channel_base``, ``channel_max``, ``num_fp16_res``,
        ``conv_clamp``, ...). Keys the training script did not pass are absent (defaults apply).
    tensors: every parameter and buffer by dotted module path (``mapping.fc0.weight``,
        ``mapping.w_avg``, ``synthesis.b4.const``, ``synthesis.b8.conv0.noise_const``, ...),
        contiguous CPU tensors in their stored dtype (float32 in NVIDIA files).
    class_names: module path -> pickled class name ('' is the root), for diagnostics.
    network: which entry of the pickle was read, ``'G_ema'`` or (fallback) ``'G'``.
    """

    init_kwargs: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    class_names: dict[str, str] = field(default_factory=dict)
    network: str = "G_ema"


# Generator.__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
# synthesis_kwargs): names for positional _init_args, should a pickle have any.
_GENERATOR_ARG_NAMES = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)


#: Deepest nesting of containers a pickle may build (a real snapshot: about 30).
MAX_NESTING = 200
#: Constructor arguments are small: filters, channel counts, names.
_MAX_KWARG_ARRAY = 65_536
_MAX_KWARG_DEPTH = 32


def _to_plain(value: Any, depth: int = 0) -> Any:
    """Nested dicts/lists/tuples of Python values; numpy arrays become lists."""
    if depth > _MAX_KWARG_DEPTH:
        raise CheckpointError("constructor arguments nested too deeply; corrupt or crafted")
    if isinstance(value, dict):
        return {key: _to_plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_plain(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_plain(item, depth + 1) for item in value)
    if isinstance(value, set | frozenset):
        return set(value)
    if isinstance(value, np.ndarray):
        if value.size > _MAX_KWARG_ARRAY or value.dtype.hasobject:
            raise CheckpointError(f"a constructor argument is an array of {value.size} "
                                  f"{value.dtype} values; corrupt or crafted")
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(value: Any) -> str:
    """A bounded description of a value for an error message (``reprlib``: depth and length
    limited, so a crafted key cannot make the message itself fail or run long)."""
    import reprlib

    limits = reprlib.Repr()
    limits.maxlevel, limits.maxstring, limits.maxother = 3, 60, 60
    try:
        return limits.repr(value) if not isinstance(value, str) else value[:60]
    except Exception:  # noqa: BLE001 - a message must not fail
        return f"<a {type(value).__name__}>"


def _unpickle(path: Path) -> Any:
    try:
        file = open(path, "rb")  # closed by the with-block below
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open ({error.strerror})") from None
    with file:
        head = file.read(4)
        file.seek(0)
        if not head:
            raise CheckpointError(f"{path}: file is empty; download the .pkl again")
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError(
                f"{path}: a torch.save zip archive (e.g. a rosinality .pt), not an NVIDIA .pkl"
            )
        if head[0] != 0x80:  # PROTO opcode; NVIDIA pickles are protocol >= 3
            raise CheckpointError(f"{path}: not a pickle (no protocol header)")
        try:
            return RestrictedUnpickler(file).load()
        except CheckpointError as error:  # includes UnsafePickleError
            raise type(error)(f"{path}: {error}") from None
        except (EOFError, struct.error):  # the Python unpickler's end-of-data errors
            raise CheckpointError(f"{path}: pickle is truncated; download the .pkl again") from None
        except pickle.UnpicklingError as error:
            if "truncated" in str(error):
                raise CheckpointError(
                    f"{path}: pickle is truncated; download the .pkl again"
                ) from None
            raise CheckpointError(f"{path}: not a valid pickle ({error})") from None
        except KeyError as error:  # the Python unpickler meets an unknown opcode
            what = _short(error.args[0]) if error.args else "?"
            raise CheckpointError(f"{path}: not a valid pickle (unknown opcode {what})") from None
        except RecursionError:
            raise CheckpointError(f"{path}: pickle is nested too deeply") from None
        except Exception as error:  # corrupt data raises many kinds
            try:
                said = str(error)[:200]
            except Exception:  # noqa: BLE001 - the message of a crafted error may fail too
                said = "?"
            raise CheckpointError(
                f"{path}: corrupt pickle ({type(error).__name__}: {said})".splitlines()[0]
            ) from None


def _collect_tensors(
    obj: PersistentObject,
    prefix: str,
    tensors: dict[str, torch.Tensor],
    class_names: dict[str, str],
    budget: list[int],
) -> None:
    """Every parameter and buffer under ``obj``; ``budget[0]`` (bytes) shrinks by each tensor,
    so tensors sharing one storage cannot add up to more than the file justifies."""
    class_names[prefix.rstrip(".")] = obj.class_name
    for slot in ("_parameters", "_buffers"):
        entries = obj.state.get(slot) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{prefix}{slot} is a {type(entries).__name__}, not a dict")
        for name, value in entries.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            budget[0] -= value.numel() * value.element_size()
            if budget[0] < 0:
                raise CheckpointError("its tensors add up to more bytes than the file holds "
                                      "(shared storages); corrupt or crafted")
            tensors[f"{prefix}{name}"] = value.detach().contiguous()
    children = obj.state.get("_modules") or {}
    if not isinstance(children, dict):
        raise CheckpointError(f"{prefix}_modules is a {type(children).__name__}, not a dict")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"submodule {prefix}{name} is not an NVIDIA persistent object")
        _collect_tensors(child, f"{prefix}{name}.", tensors, class_names, budget)


def load_nvidia_generator_state(path: str | os.PathLike[str]) -> NvidiaGeneratorState:
    """Read the generator of an NVIDIA StyleGAN2-ADA ``.pkl`` without executing its code.

    Uses ``G_ema`` (the weights meant for inference); falls back to ``G`` with a warning when
    the pickle has no ``G_ema``.

    Raises:
        UnsafePickleError: the pickle asks for a global outside the allow-list (named), or a
            tensor storage that ``torch.load(weights_only=True)`` refuses.
        CheckpointError: missing, empty, truncated or non-pickle file; no generator in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; give the path of an NVIDIA StyleGAN2 .pkl")
    data = _unpickle(path)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: top level is a {type(data).__name__}, not the dict of an NVIDIA snapshot"
        )
    if "G_ema" in data:
        network = "G_ema"
    elif "G" in data:
        network = "G"
        warnings.warn(
            f"{path}: no 'G_ema' in the pickle; using the training generator 'G' instead",
            stacklevel=2,
        )
    else:
        keys = ", ".join(sorted(_short(key) for key in data))[:200]
        raise CheckpointError(f"{path}: no 'G_ema' (or 'G') in the pickle; its keys are: {keys}")
    generator = data[network]
    if not isinstance(generator, PersistentObject):
        raise CheckpointError(f"{path}: {network!r} is not an NVIDIA persistent network object")
    if generator.class_name.rsplit(".", 1)[-1] != "Generator":
        raise CheckpointError(
            f"{path}: {network!r} is a {generator.class_name!r}, not a StyleGAN2 'Generator'"
        )

    init_kwargs = generator.state.get("_init_kwargs")
    init_args = generator.state.get("_init_args") or ()
    if not isinstance(init_kwargs, dict) or not isinstance(init_args, tuple | list):
        raise CheckpointError(f"{path}: {network!r} lacks its constructor arguments")
    if len(init_args) > len(_GENERATOR_ARG_NAMES):
        raise CheckpointError(f"{path}: {network!r} has {len(init_args)} positional arguments")
    kwargs = dict(zip(_GENERATOR_ARG_NAMES, init_args, strict=False))
    kwargs.update(init_kwargs)

    tensors: dict[str, torch.Tensor] = {}
    class_names: dict[str, str] = {}
    try:
        _collect_tensors(generator, "", tensors, class_names, [byte_budget(path)])
        plain_kwargs = _to_plain(kwargs)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: modules nested too deeply; corrupt or crafted") from None
    return NvidiaGeneratorState(plain_kwargs, tensors, class_names, network)


# ----------------------------------------------------------------------------------------------
# Conversion to the rosinality stylegan2-pytorch layout.
#
# Semantics checked against NVlabs/stylegan2-ada-pytorch @ d72cc7d (training/networks.py,
# torch_utils/ops/*) and rosinality/stylegan2-pytorch @ bef283a (model.py); every stored tensor
# maps 1:1 (reshape only, no rescaling, no flipping):
# - FullyConnectedLayer scales weight by lr_multiplier/sqrt(in) and bias by lr_multiplier at run
#   time and stores randn/lr_multiplier; EqualLinear does the same (scale = lr_mul/sqrt(in),
#   bias * lr_mul), so mapping (lr 0.01) and affine/modulation (lr 1, bias init 1) are equal.
# - SynthesisLayer keeps the raw weight and demodulates it: w*s / sqrt(sum (w*s)^2 + 1e-8).
#   rosinality scales by 1/sqrt(in*k*k) first; the scale cancels in the demodulation except
#   inside the epsilon (1e-8 vs 1e-8*in*k*k relative to the unscaled sum): negligible.
# - ToRGBLayer multiplies the styles by weight_gain = 1/sqrt(in*k*k) and does not demodulate;
#   rosinality multiplies the weight by the same 1/sqrt(fan_in): the products are identical.
# - The up=2 conv is conv_transpose2d(stride 2) on the unflipped weight, then a [1,3,3,1]
#   filter with pad (1,1) and gain 4, in both codes; the RGB skip is upsampled with
#   pad (2,1), gain 4, in both. NVIDIA's resample_filter is outer([1,3,3,1])/64; rosinality's
#   blur/upsample kernels are that times 4 (the gain folded in).
# - noise: x + noise_strength * noise_const (noise_mode='const') == x + noise.weight * noise_j.
# Differences that remain (not in the tensors): NVIDIA clamps every synthesis conv and ToRGB
# output to +-conv_clamp (256 in the FFHQ files; bias_act clamp), and runs the num_fp16_res
# highest resolutions in float16 with a max-norm pre-scaling of weight and styles;
# rosinality does neither.


def _resample_filter() -> torch.Tensor:
    """NVIDIA's ``setup_filter([1,3,3,1])``: outer([1,3,3,1]) / 64, [4,4], sums to 1."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(taps, taps) / 64.0


def _rosinality_up_kernel() -> torch.Tensor:
    """rosinality's ``make_kernel([1,3,3,1]) * factor**2`` (blur/upsample buffers), [4,4]."""
    return _resample_filter() * 4.0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckpointError(message)


def _facts(init_kwargs: dict[str, Any]) -> dict[str, Any]:
    mapping = init_kwargs.get("mapping_kwargs") or {}
    synthesis = init_kwargs.get("synthesis_kwargs") or {}
    c_dim = init_kwargs.get("c_dim", 0)
    _require(
        not c_dim, f"conditional generator (c_dim={c_dim}); only unconditional ones are supported"
    )
    channels = init_kwargs.get("img_channels", 3)
    _require(channels == 3, f"generator makes {channels}-channel images; only RGB is supported")
    architecture = synthesis.get("architecture", "skip")
    _require(
        architecture == "skip",
        f"synthesis architecture {architecture!r}; only 'skip' (the StyleGAN2 config) is supported",
    )
    resolution = init_kwargs.get("img_resolution")
    _require(
        isinstance(resolution, int) and resolution >= 4 and resolution & (resolution - 1) == 0,
        f"img_resolution {resolution!r} is not a power of two >= 4",
    )
    w_dim = init_kwargs.get("w_dim")
    z_dim = init_kwargs.get("z_dim")
    _require(isinstance(w_dim, int) and w_dim > 0, f"w_dim {w_dim!r} is not a positive integer")
    _require(
        z_dim == w_dim, f"z_dim {z_dim} differs from w_dim {w_dim}; rosinality needs them equal"
    )
    layer_features = mapping.get("layer_features")
    _require(
        layer_features in (None, w_dim), f"mapping layer_features {layer_features} != w_dim {w_dim}"
    )
    for scope, kwargs in (("mapping", mapping), ("synthesis", synthesis)):
        activation = kwargs.get("activation", "lrelu")
        _require(activation == "lrelu", f"{scope} activation {activation!r}; only 'lrelu' works")
    lr_multiplier = mapping.get("lr_multiplier", 0.01)
    _require(
        math.isclose(lr_multiplier, 0.01),
        f"mapping lr_multiplier {lr_multiplier}; the converted layout assumes 0.01",
    )
    resample_filter = synthesis.get("resample_filter", [1, 3, 3, 1])
    _require(
        list(np.asarray(resample_filter).reshape(-1)) == [1, 3, 3, 1],
        f"resample_filter {resample_filter}; only [1,3,3,1] is supported",
    )
    return {
        "resolution": resolution,
        "style_dim": w_dim,
        "n_mlp": mapping.get("num_layers", 8),
        "channel_base": synthesis.get("channel_base", 32768),
        "channel_max": synthesis.get("channel_max", 512),
        "conv_clamp": synthesis.get("conv_clamp"),
        "architecture": architecture,
    }


def _layout(
    facts: dict[str, Any], use_noise: bool
) -> dict[str, tuple[str | None, tuple[int, ...], tuple[int, ...]]]:
    """NVIDIA key -> (rosinality key or None to drop, NVIDIA shape, rosinality shape)."""
    w_dim, n_mlp, resolution = facts["style_dim"], facts["n_mlp"], facts["resolution"]

    def channels(res: int) -> int:
        return min(facts["channel_base"] // res, facts["channel_max"])

    layout: dict[str, tuple[str | None, tuple[int, ...], tuple[int, ...]]] = {}
    for i in range(n_mlp):
        layout[f"mapping.fc{i}.weight"] = (f"style.{i + 1}.weight", (w_dim, w_dim), (w_dim, w_dim))
        layout[f"mapping.fc{i}.bias"] = (f"style.{i + 1}.bias", (w_dim,), (w_dim,))
    layout["mapping.w_avg"] = ("latent_avg", (w_dim,), (w_dim,))

    def styled_conv(nv: str, ro: str, cin: int, cout: int, res: int, noise: int) -> None:
        layout[f"{nv}.weight"] = (f"{ro}.conv.weight", (cout, cin, 3, 3), (1, cout, cin, 3, 3))
        layout[f"{nv}.affine.weight"] = (f"{ro}.conv.modulation.weight", (cin, w_dim), (cin, w_dim))
        layout[f"{nv}.affine.bias"] = (f"{ro}.conv.modulation.bias", (cin,), (cin,))
        layout[f"{nv}.bias"] = (f"{ro}.activate.bias", (cout,), (cout,))
        layout[f"{nv}.resample_filter"] = (None, (4, 4), (4, 4))
        if use_noise:
            layout[f"{nv}.noise_strength"] = (f"{ro}.noise.weight", (), (1,))
            layout[f"{nv}.noise_const"] = (f"noises.noise_{noise}", (res, res), (1, 1, res, res))

    def to_rgb(nv: str, ro: str, cin: int) -> None:
        layout[f"{nv}.weight"] = (f"{ro}.conv.weight", (3, cin, 1, 1), (1, 3, cin, 1, 1))
        layout[f"{nv}.affine.weight"] = (f"{ro}.conv.modulation.weight", (cin, w_dim), (cin, w_dim))
        layout[f"{nv}.affine.bias"] = (f"{ro}.conv.modulation.bias", (cin,), (cin,))
        layout[f"{nv}.bias"] = (f"{ro}.bias", (3,), (1, 3, 1, 1))

    c4 = channels(4)
    layout["synthesis.b4.resample_filter"] = (None, (4, 4), (4, 4))
    layout["synthesis.b4.const"] = ("input.input", (c4, 4, 4), (1, c4, 4, 4))
    styled_conv("synthesis.b4.conv1", "conv1", c4, c4, 4, 0)
    to_rgb("synthesis.b4.torgb", "to_rgb1", c4)
    for k in range(int(math.log2(resolution)) - 2):
        res = 2 ** (k + 3)
        block, cin, cout = f"synthesis.b{res}", channels(res // 2), channels(res)
        layout[f"{block}.resample_filter"] = (None, (4, 4), (4, 4))
        styled_conv(f"{block}.conv0", f"convs.{2 * k}", cin, cout, res, 2 * k + 1)
        styled_conv(f"{block}.conv1", f"convs.{2 * k + 1}", cout, cout, res, 2 * k + 2)
        to_rgb(f"{block}.torgb", f"to_rgbs.{k}", cout)
    return layout


def nvidia_to_rosinality(
    state: NvidiaGeneratorState,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename an NVIDIA generator's tensors to the rosinality stylegan2-pytorch layout.

    Returns ``(g_ema, facts)``. ``g_ema`` is the state dict rosinality's ``convert_weight.py``
    stores under ``'g_ema'`` (``style.*``, ``input.input``, ``conv1.*``, ``to_rgb1.*``,
    ``convs.*``, ``to_rgbs.*``, ``noises.noise_*``, with the ``conv.blur.kernel`` and
    ``to_rgbs.k.upsample.kernel`` buffers), float32. ``facts`` holds the constructor facts
    ``resolution``, ``style_dim``, ``n_mlp``, ``channel_base``, ``channel_max``,
    ``conv_clamp``, ``architecture``, and ``latent_avg`` (``mapping.w_avg``, [w_dim] float32),
    which rosinality keeps beside ``g_ema`` rather than in it.

    A generator built with ``use_noise=False`` gets zero noise strengths and zero noise
    buffers, which computes the same thing.

    Raises:
        CheckpointError: a conditional generator, an architecture other than 'skip', not RGB,
            other activations/filters/lr multiplier, or a tensor key that is unknown (named),
            missing (named) or of the wrong shape (named).
    """
    facts = _facts(state.init_kwargs)
    use_noise = (state.init_kwargs.get("synthesis_kwargs") or {}).get("use_noise", True)
    layout = _layout(facts, bool(use_noise))

    for key in state.tensors:
        _require(key in layout, f"unknown tensor {key!r} in the NVIDIA generator; cannot convert")
    for key in layout:
        _require(key in state.tensors, f"tensor {key!r} is missing from the NVIDIA generator")

    g_ema: dict[str, torch.Tensor] = {}
    latent_avg: torch.Tensor | None = None
    for key, (target, nv_shape, ro_shape) in layout.items():
        tensor = state.tensors[key]
        _require(
            tuple(tensor.shape) == nv_shape,
            f"tensor {key!r} has shape {list(tensor.shape)}, expected {list(nv_shape)}",
        )
        tensor = tensor.detach().to(torch.float32)
        if target is None:  # resample_filter buffer: rosinality rebuilds it from blur_kernel
            _require(
                torch.allclose(tensor, _resample_filter(), atol=1e-6),
                f"tensor {key!r} is not the [1,3,3,1] filter; cannot convert",
            )
        elif target == "latent_avg":
            latent_avg = tensor.clone()
        else:
            g_ema[target] = tensor.reshape(ro_shape).contiguous()

    if not use_noise:  # only the noise entries are missing; zero strength == no noise
        for name, _, shape in _layout(facts, True).values():
            if name is not None and name != "latent_avg" and name not in g_ema:
                g_ema[name] = torch.zeros(shape)

    for k in range(int(math.log2(facts["resolution"])) - 2):
        g_ema[f"convs.{2 * k}.conv.blur.kernel"] = _rosinality_up_kernel()
        g_ema[f"to_rgbs.{k}.upsample.kernel"] = _rosinality_up_kernel()

    assert latent_avg is not None  # mapping.w_avg is in every layout
    return g_ema, {**facts, "latent_avg": latent_avg}
