"""Edit directions in W: the :class:`Direction` record, generator fingerprints, and direction files.

A direction moves W+ codes linearly: ``w̃[:, l] = w[:, l] + α · scale · vector[l]`` for the W+
layers ``l`` it applies to (:func:`vidinv.latent.editing.apply_direction`). ``vector`` is
[D] (the same offset on every layer) or [N,D] (one per layer); ``scale`` is the file's own unit
for α — 15 for the Feature-Style Encoder's flattened InterFaceGAN boundaries, the component's
standard deviation for GANSpace, 1 otherwise — so that α means the same thing as in the method
the direction comes from.

Files:

* native (``*.safetensors``, kind ``direction``): one or more directions (and a GANSpace mean),
  each with its name, kind, layers, strength range, scale, metadata and the fingerprint of the
  generator it was made for. Written by :func:`save_directions`.
* foreign, read by :func:`load_directions`: InterFaceGAN boundaries ``.npy`` ((1,512), or the
  Feature-Style Encoder's (1,N·512)); e4e ``.pt`` ([1,512] or [1,N,512]); GANSpace ``.pt``
  (``{mean (1,512), comp (K,1,512), std (K,)}``, e4e/PTI) and ``.npz`` (harskish/ganspace:
  ``lat_comp``, ``lat_mean``, ``lat_stdev``, …). Foreign files carry no fingerprint; using them
  with a generator warns once (:class:`UnverifiedDirectionWarning`), as FFHQ directions for an
  FFHQ generator are the normal case.

A model folder may hold its directions in ``directions/`` next to the generator
(:func:`list_directions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidinv.errors import CheckpointError, InputFileError
from vidinv.latent.errors import (
    DirectionError,
    GeneratorMismatchError,
    UnverifiedDirectionWarning,
)
from vidinv.models.folder import DIRECTIONS_FOLDER

if TYPE_CHECKING:
    from vidinv.models.stylegan2 import StyleGAN2Generator

log = logging.getLogger(__name__)

#: ``vidinv.kind`` of native direction files.
DIRECTION_KIND = "direction"
DEFAULT_STRENGTH_RANGE = (-3.0, 3.0)
#: The Feature-Style Encoder applies its flattened (1, 18·512) boundaries as w + 15·α·b.
FSE_BOUNDARY_SCALE = 15.0
#: Hex digits of a generator fingerprint.
FINGERPRINT_LENGTH = 16
#: File suffixes a directions folder is scanned for.
DIRECTION_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")

#: Torch files larger than this are taken for models, not directions, when listing.
_MAX_TORCH_DIRECTION_BYTES = 16 * 2**20

#: The largest |scale · vector| element accepted. W codes sit within a few units of zero; a
#: unit direction times the Feature-Style Encoder's scale 15 stays below 1, a GANSpace
#: component times its stdev below ~10. A larger offset (a crafted or broken file) would only
#: render a blob.
MAX_DIRECTION_VALUE = 100.0
#: Most elements a direction vector may have (N · D of the largest generators is 18 · 512).
MAX_DIRECTION_ELEMENTS = 64 * 4096
#: Most directions in one file (GANSpace keeps tens to hundreds of components).
MAX_DIRECTIONS_PER_FILE = 4096

_GANSPACE_PT_KEYS = {"mean", "comp", "std"}
_GANSPACE_NPZ_REQUIRED = {"lat_comp", "lat_mean", "lat_stdev"}
_GANSPACE_NPZ_OPTIONAL = {"act_comp", "act_mean", "act_stdev", "var_ratio", "random_stdevs"}


# --- the record ------------------------------------------------------------------------------


@dataclass
class Direction:
    """A linear edit in W.

    Attributes:
        name: what it edits (``smile``, ``pc3``, ``sefa0``).
        vector: [D] (every layer) or [N,D] (per W+ layer) float32 on the CPU. Given as any of
            (D,), (1,D), (N,D), (1,N,D) or (1,N·D), it is stored as [D], [N,D] or [N·D]
            (the flattened form is unfolded when applied, once N is known).
        kind: where it comes from: ``interfacegan``, ``sefa``, ``ganspace``, ``e4e``, …
        layers: (first, last) W+ layers it applies to, *both inclusive*, or None for all.
        strength_range: the useful range of α (for sliders and sweeps).
        scale: the unit of α: the edit is ``α · scale · vector``.
        generator_fingerprint: :func:`generator_fingerprint` of the generator it was made for,
            or None (a foreign file).
        meta: JSON-able extras (``accuracy``, ``n_samples``, ``attribute``, ``source``, …).
    """

    name: str
    vector: torch.Tensor
    kind: str = "custom"
    layers: tuple[int, int] | None = None
    strength_range: tuple[float, float] = DEFAULT_STRENGTH_RANGE
    scale: float = 1.0
    generator_fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vector = torch.as_tensor(self.vector).detach().to("cpu", torch.float32)
        if vector.ndim == 3 and vector.shape[0] == 1:
            vector = vector[0]  # (1,N,D)
        elif vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]  # (1,D) or (1,N·D)
        if vector.ndim not in (1, 2) or vector.numel() == 0:
            raise DirectionError(f"direction {self.name!r}: vector of shape "
                                 f"{tuple(vector.shape)}; expected (D,), (1,D), (N,D), (1,N,D) "
                                 "or (1,N·D)")
        if vector.numel() > MAX_DIRECTION_ELEMENTS:
            raise DirectionError(f"direction {self.name!r}: {vector.numel()} values; a W+ "
                                 f"direction has at most {MAX_DIRECTION_ELEMENTS}")
        self.vector = vector.contiguous()
        if self.layers is not None:
            first, last = (int(v) for v in self.layers)
            if not 0 <= first <= last:
                raise DirectionError(f"direction {self.name!r}: layers {self.layers} must be "
                                     "(first, last) with 0 ≤ first ≤ last")
            self.layers = (first, last)
        low, high = (float(v) for v in self.strength_range)
        self.strength_range = (low, high)
        self.scale = float(self.scale)
        if not math.isfinite(self.scale):
            raise DirectionError(f"direction {self.name!r}: scale {self.scale} is not finite")
        check_direction_values(self.vector * self.scale, self.name)

    def __repr__(self) -> str:
        return (f"Direction({self.name!r}, kind={self.kind!r}, shape={tuple(self.vector.shape)}, "
                f"layers={self.layers}, scale={self.scale:g}, "
                f"generator={self.generator_fingerprint})")

    @property
    def layer_slice(self) -> slice | None:
        """The W+ layers as a slice (``layers`` is inclusive, the slice is not), or None."""
        return None if self.layers is None else slice(self.layers[0], self.layers[1] + 1)

    def with_layers(self, first: int | None, last: int | None = None) -> Direction:
        """A copy applied to W+ layers ``first..last`` (inclusive); ``None`` for all layers.

        GANSpace's edits are (component, first, last, strength): ``pcs['pc54'].with_layers(7, 8)``.
        """
        if first is None:
            return dataclasses.replace(self, layers=None)
        return dataclasses.replace(self, layers=(first, first if last is None else last))

    def layer_vectors(self, n_latent: int, style_dim: int) -> torch.Tensor:
        """[n_latent, style_dim] float32: the vector on every layer (before scale and layers)."""
        return layer_vectors(self.vector, n_latent, style_dim, name=self.name)

    def check_generator(self, generator: StyleGAN2Generator,
                        fingerprint: str | None = None) -> None:
        """Raise if this direction does not fit ``generator``; warn once if it cannot be told.

        A direction made for another generator (different fingerprint) raises
        :class:`GeneratorMismatchError` naming both fingerprints; one without a fingerprint (a
        foreign file) warns with :class:`UnverifiedDirectionWarning`. The shape must fit the
        generator's W+ (``n_latent`` × ``style_dim``) and ``layers``. Pass ``fingerprint`` when
        it is already known to skip hashing the weights again.
        """
        self.layer_vectors(generator.n_latent, generator.style_dim)
        resolve_layers(self.layer_slice, generator.n_latent, name=self.name)
        if self.generator_fingerprint is None:
            source = self.meta.get("source")
            warnings.warn(
                f"direction {self.name!r}{f' ({source})' if source else ''} has no generator "
                "fingerprint (a foreign file?); make sure it was made for this generator's "
                "latent space", UnverifiedDirectionWarning, stacklevel=2)
            return
        actual = fingerprint or generator_fingerprint(generator)
        if actual != self.generator_fingerprint:
            raise GeneratorMismatchError(
                f"direction {self.name!r} was made for generator {self.generator_fingerprint}, "
                f"not for this generator {actual}; use directions made for this model (vidinv "
                "directions fit)")


def check_direction_values(offset: torch.Tensor, name: str = "direction") -> None:
    """Raise :class:`DirectionError` if the edit ``offset`` (scale · vector) holds NaN, ±inf or
    an element beyond ±:data:`MAX_DIRECTION_VALUE`."""
    if offset.numel() == 0:
        return
    if not bool(torch.isfinite(offset).all()):
        raise DirectionError(f"direction {name!r}: vector has NaN or infinite values; the file "
                             "is broken, re-create it")
    largest = float(offset.abs().max())
    if largest > MAX_DIRECTION_VALUE:
        raise DirectionError(f"direction {name!r}: an edit offset of {largest:.3g} (scale · "
                             f"vector) is beyond ±{MAX_DIRECTION_VALUE:g}; W codes lie within a "
                             "few units, so the file is broken or not a W direction")


def layer_vectors(vector: torch.Tensor, n_latent: int, style_dim: int,
                  name: str = "direction") -> torch.Tensor:
    """Any accepted direction shape -> [n_latent, style_dim] (a view or an expansion).

    Accepts (D,), (1,D), (N,D), (1,N,D) and (1,N·D) — the last is the Feature-Style Encoder's
    flattened InterFaceGAN layout, 9216 = 18 × 512.
    """
    v = torch.as_tensor(vector)
    shape = tuple(v.shape)
    if v.ndim == 3 and v.shape[0] == 1:
        v = v[0]
    elif v.ndim == 2 and v.shape[0] == 1 and n_latent != 1:
        v = v[0]
    if v.ndim == 1 and v.shape[0] == n_latent * style_dim and n_latent != 1:
        v = v.reshape(n_latent, style_dim)
    if v.ndim == 1 and v.shape[0] == style_dim:
        return v.expand(n_latent, style_dim)
    if v.ndim == 2 and tuple(v.shape) == (n_latent, style_dim):
        return v
    if v.ndim == 2 and v.shape[1] == style_dim:
        raise DirectionError(f"direction {name!r} has {v.shape[0]} layers, the generator "
                             f"{n_latent}; it was made for another resolution")
    raise DirectionError(f"direction {name!r} of shape {shape} does not fit W+ codes of "
                         f"{n_latent}×{style_dim}")


def resolve_layers(layers: range | slice | None, n_latent: int,
                   name: str = "direction") -> range:
    """``layers`` (a range or slice of W+ layers, step 1; None for all) as a checked range."""
    if layers is None:
        return range(n_latent)
    if isinstance(layers, slice):
        if layers.step not in (None, 1):
            raise DirectionError(f"direction {name!r}: layer slices must have step 1")
        start = 0 if layers.start is None else layers.start
        stop = n_latent if layers.stop is None else layers.stop
        layers = range(start, stop)
    if not isinstance(layers, range) or layers.step != 1:
        raise DirectionError(f"direction {name!r}: layers must be a range or slice of step 1, "
                             f"got {layers!r}")
    if layers.start < 0 or layers.stop > n_latent or len(layers) == 0:
        raise DirectionError(f"direction {name!r}: layers {layers.start}..{layers.stop - 1} are "
                             f"outside the generator's W+ layers 0..{n_latent - 1}")
    return layers


@dataclass
class DirectionSet:
    """Several directions from one file or method (GANSpace components, SeFa eigenvectors).

    Index by position or by name; ``mean`` is GANSpace's W mean [D] (None otherwise).
    """

    directions: list[Direction]
    mean: torch.Tensor | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        self.directions = list(self.directions)
        names = [d.name for d in self.directions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DirectionError(f"duplicate direction names {duplicates}")
        if self.mean is not None:
            self.mean = torch.as_tensor(self.mean).detach().to("cpu", torch.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.directions)

    def __iter__(self) -> Iterator[Direction]:
        return iter(self.directions)

    def __getitem__(self, key: int | str) -> Direction:
        if isinstance(key, int | np.integer):
            return self.directions[int(key)]
        for direction in self.directions:
            if direction.name == key:
                return direction
        where = f" in {self.source}" if self.source else ""
        raise DirectionError(f"no direction {key!r}{where}; it has {_names_hint(self.names)}")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.directions]

    def check_generator(self, generator: StyleGAN2Generator) -> None:
        """:meth:`Direction.check_generator` for each direction, hashing the weights once."""
        fingerprint = generator_fingerprint(generator)
        for direction in self.directions:
            direction.check_generator(generator, fingerprint=fingerprint)


def _names_hint(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


# --- fingerprints ----------------------------------------------------------------------------


def generator_fingerprint(generator: StyleGAN2Generator) -> str:
    """A short hex digest (16 digits) identifying a generator's weights.

    sha256 over the parameters of ``generator.mapping`` then ``generator.synthesis``, each in
    sorted name order as ``"<module>.<name>:<shape>;"`` followed by its values rounded to float16
    (little-endian). Rounding makes a half-precision copy fingerprint like its float32 original
    and the device does not matter. The constant-noise buffers and ``latent_avg`` are left out:
    they do not change what a direction in W means.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for prefix, module in (("mapping", generator.mapping),
                               ("synthesis", generator.synthesis)):
            parameters = dict(module.named_parameters())
            for name in sorted(parameters):
                values = parameters[name].detach().to(torch.float16).cpu().contiguous()
                digest.update(f"{prefix}.{name}:{tuple(values.shape)};".encode())
                digest.update(values.numpy().astype("<f2", copy=False).tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


# --- native files ----------------------------------------------------------------------------


def save_directions(path: str | Path,
                    directions: Direction | DirectionSet | Iterable[Direction]) -> Path:
    """Write one or more directions (and a GANSpace mean) as a native ``direction`` file."""
    from vidinv.models.native import save_native

    if isinstance(directions, Direction):
        directions = DirectionSet([directions])
    elif not isinstance(directions, DirectionSet):
        directions = DirectionSet(list(directions))
    if len(directions) == 0:
        raise DirectionError("nothing to save: the direction set is empty")
    entries = []
    tensors: dict[str, torch.Tensor] = {}
    for i, direction in enumerate(directions):
        entries.append({
            "name": direction.name, "kind": direction.kind,
            "layers": list(direction.layers) if direction.layers is not None else None,
            "strength_range": list(direction.strength_range), "scale": direction.scale,
            "generator_fingerprint": direction.generator_fingerprint, "meta": direction.meta,
        })
        tensors[f"direction.{i}"] = direction.vector
    if directions.mean is not None:
        tensors["mean"] = directions.mean
    config = {"directions": entries}
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"direction metadata must be JSON-serialisable: {error}") from None
    return save_native(path, DIRECTION_KIND, config, tensors)


def _load_native_directions(path: Path) -> DirectionSet:
    from vidinv.models.native import load_native

    checkpoint = load_native(path)
    if checkpoint.kind != DIRECTION_KIND:
        raise DirectionError(f"{path}: a native {checkpoint.kind} file, not directions")
    entries = checkpoint.config.get("directions")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{path}: direction file without a direction list; re-create it")
    expected = {f"direction.{i}" for i in range(len(entries))} | {"mean"}
    for name in checkpoint.tensors:
        if name not in expected:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} in a direction file")
    if len(entries) > MAX_DIRECTIONS_PER_FILE:
        raise CheckpointError(f"{path}: {len(entries)} directions in one file; corrupt")
    directions = []
    for i, entry in enumerate(entries):
        key = f"direction.{i}"
        if key not in checkpoint.tensors:
            raise CheckpointError(f"{path}: missing tensor {key!r}; the file is incomplete")
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("kind"), str):
            raise CheckpointError(f"{path}: direction {i} is not an entry with a name and a "
                                  "kind; re-create the file")
        try:
            directions.append(Direction(
                name=entry["name"], vector=checkpoint.tensors[key], kind=entry["kind"],
                layers=tuple(entry["layers"]) if entry.get("layers") is not None else None,
                strength_range=tuple(entry.get("strength_range", DEFAULT_STRENGTH_RANGE)),
                scale=entry.get("scale", 1.0),
                generator_fingerprint=entry.get("generator_fingerprint"),
                meta=dict(entry.get("meta") or {})))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise CheckpointError(f"{path}: direction {i} has a bad entry "
                                  f"({type(error).__name__}: {error}); re-create the "
                                  "file".splitlines()[0]) from None
        except DirectionError as error:
            raise DirectionError(f"{path}: {error}") from None
    return DirectionSet(directions, mean=checkpoint.tensors.get("mean"), source=path)


# --- foreign files ---------------------------------------------------------------------------


def _foreign_meta(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": str(path), **extra}


def _load_interfacegan_npy(path: Path) -> DirectionSet:
    from vidinv.models.safe_load import load_npy

    try:
        array = load_npy(path)
    except CheckpointError as error:
        raise DirectionError(str(error)) from None
    except (ValueError, OSError) as error:
        raise DirectionError(f"{path}: not a readable .npy boundary ({error})") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise DirectionError(f"{path}: boundary of dtype {array.dtype}, expected floats")
    name = path.stem.removesuffix("_boundary")
    flat = array.reshape(-1) if array.ndim == 2 and array.shape[0] == 1 else None
    if array.ndim == 1 or (flat is not None and flat.shape[0] == 512) \
            or (array.ndim == 2 and array.shape[1] == 512):
        vector = torch.from_numpy(array.copy())
        return DirectionSet([Direction(name, vector, kind="interfacegan",
                                       meta=_foreign_meta(path, layout="interfacegan"))],
                            source=path)
    if flat is not None and flat.shape[0] % 512 == 0:
        n_latent = flat.shape[0] // 512
        vector = torch.from_numpy(flat.reshape(n_latent, 512).copy())
        return DirectionSet([Direction(
            name, vector, kind="interfacegan", scale=FSE_BOUNDARY_SCALE,
            meta=_foreign_meta(path, layout="feature-style-encoder",
                               note="applied as w + 15·α·b, as the Feature-Style Encoder does"))],
            source=path)
    raise DirectionError(f"{path}: InterFaceGAN boundary of shape {array.shape}; expected "
                         "(1,512) or the Feature-Style Encoder's (1,N·512)")


def _ganspace_set(path: Path, mean: np.ndarray | torch.Tensor, comp: np.ndarray | torch.Tensor,
                  std: np.ndarray | torch.Tensor, var_ratio: np.ndarray | None = None,
                  layout: str = "ganspace") -> DirectionSet:
    comp_t = torch.as_tensor(np.asarray(comp, dtype=np.float32))
    std_t = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
    if comp_t.ndim < 2 or comp_t.shape[0] != std_t.shape[0]:
        raise DirectionError(f"{path}: GANSpace components of shape {tuple(comp_t.shape)} and "
                             f"stdevs of shape {tuple(std_t.shape)} do not match")
    comp_t = comp_t.reshape(comp_t.shape[0], -1)
    if comp_t.shape[1] != mean_t.shape[0]:
        raise DirectionError(f"{path}: GANSpace components of width {comp_t.shape[1]} and a "
                             f"mean of width {mean_t.shape[0]}")
    directions = []
    for i in range(comp_t.shape[0]):
        meta = _foreign_meta(path, layout=layout, component=i, std=float(std_t[i]))
        if var_ratio is not None and i < len(var_ratio):
            meta["explained_variance_ratio"] = float(var_ratio[i])
        directions.append(Direction(f"pc{i}", comp_t[i], kind="ganspace", scale=float(std_t[i]),
                                    meta=meta))
    return DirectionSet(directions, mean=mean_t, source=path)


def _load_ganspace_npz(path: Path) -> DirectionSet:
    from vidinv.models.safe_load import load_npz

    try:
        arrays = load_npz(path)
    except CheckpointError as error:
        raise DirectionError(str(error)) from None
    except (ValueError, OSError) as error:
        raise DirectionError(f"{path}: not a readable .npz ({error})") from None
    missing = _GANSPACE_NPZ_REQUIRED - arrays.keys()
    if missing:
        raise DirectionError(f"{path}: not a GANSpace file (missing {sorted(missing)}; has "
                             f"{sorted(arrays)})")
    unknown = arrays.keys() - _GANSPACE_NPZ_REQUIRED - _GANSPACE_NPZ_OPTIONAL
    if unknown:
        raise DirectionError(f"{path}: unknown GANSpace key {sorted(unknown)[0]!r}")
    return _ganspace_set(path, arrays["lat_mean"], arrays["lat_comp"], arrays["lat_stdev"],
                         var_ratio=arrays.get("var_ratio"), layout="ganspace-npz")


def _load_torch_directions(path: Path) -> DirectionSet:
    from vidinv.models.safe_load import torch_load

    try:
        obj = torch_load(path, "direction file")
    except CheckpointError as error:
        raise DirectionError(f"not a readable tensor file: {error}") from None
    if isinstance(obj, torch.Tensor):
        if obj.ndim in (2, 3) and obj.shape[0] == 1 and obj.shape[-1] == 512:
            return DirectionSet([Direction(path.stem, obj, kind="e4e",
                                           meta=_foreign_meta(path, layout="e4e"))], source=path)
        raise DirectionError(f"{path}: tensor of shape {tuple(obj.shape)}; expected an e4e "
                             "direction [1,512] or [1,N,512]")
    if isinstance(obj, dict):
        keys = set(obj)
        if keys == _GANSPACE_PT_KEYS:
            return _ganspace_set(path, obj["mean"], obj["comp"], obj["std"],
                                 layout="ganspace-pt")
        unknown = sorted(str(k) for k in keys - _GANSPACE_PT_KEYS)
        if unknown:
            raise DirectionError(f"{path}: unknown key {unknown[0]!r}; a GANSpace file has "
                                 "exactly mean, comp, std")
        raise DirectionError(f"{path}: GANSpace file without {sorted(_GANSPACE_PT_KEYS - keys)}")
    raise DirectionError(f"{path}: holds a {type(obj).__name__}, not a direction")


def load_directions(path: str | Path) -> DirectionSet:
    """Every direction in a native or foreign direction file (see the module docstring)."""
    from vidinv.models.native import looks_like_safetensors

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file; check the path or list the model's "
                             "directions with `vidinv directions list`")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder; pass a direction file inside it")
    with path.open("rb") as handle:
        head = handle.read(16)
    suffix = path.suffix.lower()
    if looks_like_safetensors(head):
        return _load_native_directions(path)
    if head.startswith(b"\x93NUMPY"):
        return _load_interfacegan_npy(path)
    if suffix == ".npz":
        return _load_ganspace_npz(path)
    if suffix in (".pt", ".pth") or head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return _load_torch_directions(path)
    raise DirectionError(f"{path}: not a direction file vidinv knows (native .safetensors, "
                         "InterFaceGAN .npy, e4e/GANSpace .pt, GANSpace .npz)")


def load_direction(path: str | Path, name: str | None = None,
                   generator: StyleGAN2Generator | None = None) -> Direction:
    """One direction from a file: the only one, or the one called ``name``.

    With ``generator``, the direction is checked against it (:meth:`Direction.check_generator`).
    """
    directions = load_directions(path)
    if name is not None:
        direction = directions[name]
    elif len(directions) == 1:
        direction = directions[0]
    else:
        raise DirectionError(f"{path}: holds {len(directions)} directions; pick one by name "
                             f"({_names_hint(directions.names)})")
    if generator is not None:
        direction.check_generator(generator)
    return direction


# --- folders ---------------------------------------------------------------------------------


def _native_kind(path: Path) -> str | None:
    """The ``vidinv.kind`` of a safetensors file, reading only its header (None if foreign)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("vidinv.kind")
    except (SafetensorError, OSError, ValueError):
        return None


def is_model_file(path: Path) -> bool:
    """A model rather than a direction file: a native file of another kind, an NVIDIA pickle,
    or a torch file too large to be directions (an 80-component GANSpace file is ~170 kB)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _native_kind(path) not in (None, DIRECTION_KIND)
    if suffix == ".pkl":
        return True
    return suffix in (".pt", ".pth") and path.stat().st_size > _MAX_TORCH_DIRECTION_BYTES


def direction_files(path: str | Path) -> list[Path]:
    """The direction files of a model file, a model folder or a directions folder.

    A model file ``m/G.safetensors`` (or ``.pt``/``.pkl``) and a model folder ``m/`` both mean
    ``m/directions/``; a folder without a ``directions/`` subfolder is scanned itself. Native
    files of another kind (the generator itself) are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or folder")
    if path.is_file():
        if not is_model_file(path):
            return [path]
        folder = path.parent / DIRECTIONS_FOLDER  # a model file: its folder's directions
        if not folder.is_dir():
            return []
    else:
        folder = path / DIRECTIONS_FOLDER if (path / DIRECTIONS_FOLDER).is_dir() else path
    files = []
    for candidate in sorted(folder.iterdir()):
        if not candidate.is_file() or candidate.suffix.lower() not in DIRECTION_SUFFIXES:
            continue
        if is_model_file(candidate) or (candidate.suffix.lower() == ".safetensors"
                                         and _native_kind(candidate) != DIRECTION_KIND):
            continue
        files.append(candidate)
    return files


def list_directions(path: str | Path) -> list[DirectionSet]:
    """Load every direction file :func:`direction_files` finds; unreadable or malformed ones
    are skipped with a logged warning (a folder may hold other ``.pt``/``.npy`` files, and one
    bad file must not break every edit of the model)."""
    from vidinv.errors import VidinvError

    sets = []
    for file in direction_files(path):
        try:
            sets.append(load_directions(file))
        except (VidinvError, ValueError, TypeError, OSError, RecursionError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("skipping %s: %s", file, message)
    return sets
