"""Editing inverted codes: move W+ along a direction and carry the edit into the feature tensor.

The Feature-Style Encoder inverts an image to W+ codes ``w`` [B,N,D] and a feature tensor ``F``
that replaces the generator's k-th feature map (k = 5: [B,512,16,16]). Rendering
``G.synthesis(w, features=F, k=k)`` uses ``w[:, :k]`` only for the low-resolution RGB skip, so
an edit of those layers would be mostly lost; paper 003 (§3.3, Eq. 1) moves the feature tensor
by what the edit does to the generator's own k-th features:

    F̃ = F + G.features(w̃, k) − G.features(w, k),      image = G.synthesis(w̃, features=F̃, k)

Here ``w̃ = w + α · scale · d`` on the direction's layers (:func:`apply_direction`). An edit that
touches no layer below k leaves F unchanged (and costs nothing extra); α = 0 reproduces the
inversion exactly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vidinv.latent.directions import (
    Direction,
    check_direction_values,
    generator_fingerprint,
    layer_vectors,
    resolve_layers,
)
from vidinv.latent.errors import StrengthError
from vidinv.models import FEATURE_INDEX

if TYPE_CHECKING:
    from vidinv.models.stylegan2 import StyleGAN2Generator

#: The Feature-Style Encoder's feature layer.
DEFAULT_K = FEATURE_INDEX

_OWN_LAYERS = object()

#: The largest |α| accepted. Useful edits lie within a few units (a direction's own
#: ``strength_range`` is ±3 by default); beyond this the codes leave the generator's domain and
#: render a blob, so a larger value is taken for a typo.
MAX_STRENGTH = 100.0


def check_strength(strength: object) -> float:
    """``strength`` as a float, or a one-line :class:`StrengthError` for NaN, ±inf or
    ``|α| > MAX_STRENGTH``."""
    try:
        value = float(strength)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StrengthError(f"edit strength {strength!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise StrengthError(f"edit strength {value:g} is outside [-{MAX_STRENGTH:g}, "
                            f"{MAX_STRENGTH:g}]; useful strengths are a few units, e.g. "
                            "--strength 2")
    return value


def direction_offset(direction: Direction | torch.Tensor, n_latent: int, style_dim: int,
                     layers: range | slice | None | object = _OWN_LAYERS) -> torch.Tensor:
    """The edit of α = 1: [n_latent, style_dim] float32, ``scale · vector`` on the chosen layers
    and exactly 0 elsewhere.

    ``layers`` (a range or slice of W+ layers; None for all) defaults to the direction's own
    ``layers`` (all layers for a bare tensor). A bare tensor has scale 1.
    """
    if isinstance(direction, Direction):
        name, scale = direction.name, direction.scale
        vectors = direction.layer_vectors(n_latent, style_dim)
        if layers is _OWN_LAYERS:
            layers = direction.layer_slice
    else:
        name, scale = "direction", 1.0
        vectors = layer_vectors(torch.as_tensor(direction).detach().float().cpu(), n_latent,
                                style_dim)
        if layers is _OWN_LAYERS:
            layers = None
    chosen = resolve_layers(layers, n_latent, name=name)  # type: ignore[arg-type]
    offset = torch.zeros(n_latent, style_dim, dtype=torch.float32)
    offset[chosen.start:chosen.stop] = vectors[chosen.start:chosen.stop].float() * scale
    check_direction_values(offset, name)
    return offset


def _strength_tensor(strength: float | torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """α as [B,1,1] (or a scalar tensor) in w's dtype and device."""
    alpha = torch.as_tensor(strength, dtype=w.dtype, device=w.device)
    if alpha.numel() and (not bool(torch.isfinite(alpha).all())
                          or float(alpha.abs().max()) > MAX_STRENGTH):
        raise StrengthError(f"edit strengths must be finite and within ±{MAX_STRENGTH:g}")
    if alpha.ndim == 0:
        return alpha
    if alpha.ndim != 1 or alpha.shape[0] not in (1, w.shape[0]):
        raise ValueError(f"strength must be a number or [B] with B = {w.shape[0]}, got "
                         f"{tuple(alpha.shape)}")
    return alpha[:, None, None]


def apply_direction(w: torch.Tensor, direction: Direction | torch.Tensor,
                    strength: float | torch.Tensor = 1.0,
                    layers: range | slice | None | object = _OWN_LAYERS) -> torch.Tensor:
    """w̃ = w + α · scale · d on the chosen W+ layers; the other layers are returned unchanged.

    Args:
        w: [B,N,D] W+ codes (or [N,D] for one frame).
        direction: a :class:`Direction`, or a tensor of shape (D,), (1,D), (N,D), (1,N,D) or
            (1,N·D) (then scale 1). A [D] vector moves every chosen layer alike.
        strength: α, a number or a [B] tensor (one per sample).
        layers: a range or slice of W+ layers; None for all; by default the direction's own.

    Returns w̃ of w's shape, dtype and device. There is no generator here, so nothing is
    checked against one: :func:`render_edit` and :class:`LatentEditor` do that.
    """
    single = w.ndim == 2
    codes = w[None] if single else w
    if codes.ndim != 3:
        raise ValueError(f"w must be [B,N,D] or [N,D], got {tuple(w.shape)}")
    offset = direction_offset(direction, codes.shape[1], codes.shape[2], layers)
    edited = _shift(codes, offset.to(codes.device, codes.dtype), _strength_tensor(strength, codes))
    return edited[0] if single else edited


def _moved_rows(offset: torch.Tensor) -> tuple[int, int]:
    """(first, stop) of the rows of an [N,D] offset that are not all zero; (0, 0) if none."""
    rows = offset.abs().sum(dim=1).nonzero().flatten()
    if rows.numel() == 0:
        return 0, 0
    return int(rows[0]), int(rows[-1]) + 1


def _shift(w: torch.Tensor, offset: torch.Tensor, alpha: torch.Tensor,
           rows: tuple[int, int] | None = None) -> torch.Tensor:
    """w + α·offset on the layers where offset is non-zero, leaving the others bit-identical."""
    first, stop = _moved_rows(offset) if rows is None else rows
    edited = w.clone()
    if stop > first:
        edited[:, first:stop] = w[:, first:stop] + alpha * offset[first:stop]
    return edited


def edit_with_features(generator: StyleGAN2Generator, w: torch.Tensor, features: torch.Tensor,
                       w_edit: torch.Tensor, k: int = DEFAULT_K) -> torch.Tensor:
    """Eq. 1 of paper 003 (:meth:`StyleGAN2Generator.edited_features`) on the samples it moves.

    w, w_edit: [B,N,D]; features: [B,C,R,R] = ``G.synthesis.feature_shape(k)``. Samples whose
    first k layers did not change get F back exactly (no generator call for them).
    Returns F̃ [B,C,R,R] in F's dtype.
    """
    if w.shape != w_edit.shape or w.ndim != 3:
        raise ValueError(f"w and w_edit must both be [B,N,D], got {tuple(w.shape)} and "
                         f"{tuple(w_edit.shape)}")
    changed = (w_edit[:, :k] != w[:, :k]).flatten(1).any(dim=1)  # [B]
    if not bool(changed.any()):
        return features
    if bool(changed.all()):
        return generator.edited_features(w, w_edit, features, k)
    index = changed.nonzero().flatten()
    edited = features.clone()
    edited[index] = generator.edited_features(w[index], w_edit[index], features[index], k)
    return edited


def render_edit(generator: StyleGAN2Generator, w: torch.Tensor, features: torch.Tensor,
                direction: Direction | torch.Tensor, strength: float | torch.Tensor = 1.0,
                k: int = DEFAULT_K, layers: range | slice | None | object = _OWN_LAYERS,
                check: bool = True) -> torch.Tensor:
    """Edit an inversion (w [B,N,D], F [B,C,R,R]) and render it: [B,3,R,R] about [-1,1].

    ``G.synthesis(w̃, features=F̃, k)``; with α = 0 this is exactly the inversion
    ``G.synthesis(w, features=F, k)``. With ``check`` a :class:`Direction` is checked against the
    generator (fingerprint and shape), which hashes the weights on every call: for a stream of
    frames use a :class:`LatentEditor`, which checks once.
    """
    if check and isinstance(direction, Direction):
        direction.check_generator(generator)
    w_edit = apply_direction(w, direction, strength, layers)
    features_edit = edit_with_features(generator, w, features, w_edit, k)
    return generator.synthesis(w_edit, features=features_edit, k=k)


class _OffsetEditor:
    """What both editors share: apply an [N,D] W+ offset (with Eq. 1 on F) and render.

    Subclasses set ``generator``, ``k`` and ``_on_device`` (a per device/dtype copy cache of
    the current offset, cleared when the offset changes).
    """

    generator: StyleGAN2Generator
    k: int
    _on_device: dict[tuple[torch.device, torch.dtype], torch.Tensor]

    def _apply(self, w: torch.Tensor, features: torch.Tensor, offset: torch.Tensor,
               alpha: float, rows: tuple[int, int], moves_features: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """w [B,N,D] or [N,D], F [B,C,R,R] or [C,R,R] -> (w + α·offset, F̃), same shapes."""
        single = w.ndim == 2
        codes = w[None] if single else w
        maps = features[None] if single else features
        key = (codes.device, codes.dtype)
        if key not in self._on_device:
            self._on_device[key] = offset.to(codes.device, codes.dtype)
        scale = torch.tensor(alpha, dtype=codes.dtype, device=codes.device)
        w_edit = _shift(codes, self._on_device[key], scale, rows)
        if moves_features:
            maps = edit_with_features(self.generator, codes, maps, w_edit, self.k)
        if single:
            return w_edit[0], maps[0]
        return w_edit, maps

    @torch.no_grad()
    def render(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The edited image [B,3,R,R] (w [B,N,D], F [B,C,R,R]): one generator call."""
        w_edit, features_edit = self(w, features)  # type: ignore[operator]
        return self.generator.synthesis(w_edit, features=features_edit, k=self.k)


class LatentEditor(_OffsetEditor):
    """The per-frame editing step: ``editor(w, F) -> (w̃, F̃)`` for one direction.

    Holds the generator, the direction (checked against the generator once, here), α
    (``strength``, which may be changed between calls, e.g. by a slider), the layers and k. The
    edit of α = 1 is computed once; a call costs one addition, plus two passes through the
    generator's first k layers when the edit touches them (none when it does not, or α = 0).
    Runs without autograd.

    w: [B,N,D] or [N,D]; F: [B,C,R,R] or [C,R,R] (one frame, as :class:`~vidinv.frame.Frame`
    holds them). Returns tensors of the same shapes.
    """

    def __init__(self, generator: StyleGAN2Generator, direction: Direction | torch.Tensor,
                 strength: float = 1.0, layers: range | slice | None | object = _OWN_LAYERS,
                 k: int = DEFAULT_K, check: bool = True) -> None:
        self.generator = generator
        self.direction = direction
        self.strength = strength
        self.k = int(k)
        generator.synthesis.feature_shape(self.k)  # validates k
        self.fingerprint = generator_fingerprint(generator) if check else None
        if check and isinstance(direction, Direction):
            direction.check_generator(generator, fingerprint=self.fingerprint)
        self._offset = direction_offset(direction, generator.n_latent, generator.style_dim,
                                        layers)
        self._rows = _moved_rows(self._offset)
        self._on_device: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        #: Whether the edit reaches layers below k, i.e. F̃ ≠ F for α ≠ 0.
        self.moves_features = bool(self._offset[: self.k].any())

    @property
    def strength(self) -> float:
        """α; setting it checks it (finite, ``|α| ≤ MAX_STRENGTH``)."""
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = check_strength(value)

    @property
    def name(self) -> str | None:
        """The direction's name; None for a direction given as a bare tensor."""
        return self.direction.name if isinstance(self.direction, Direction) else None

    def __repr__(self) -> str:
        return f"LatentEditor({self.name or 'tensor'!r}, strength={self.strength:g}, k={self.k})"

    def active_names(self) -> frozenset[str] | None:
        """The names of the directions in force (a non-zero strength); None for a direction
        given as a bare tensor (its meaning is unknown)."""
        if self.strength == 0.0:
            return frozenset()
        return None if self.name is None else frozenset({self.name})

    @property
    def offset(self) -> torch.Tensor:
        """The edit of α = 1, [N,D] float32 on the CPU."""
        return self._offset

    @torch.no_grad()
    def __call__(self, w: torch.Tensor,
                 features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.strength == 0.0:
            return w, features
        return self._apply(w, features, self._offset, self.strength, self._rows,
                           self.moves_features)



class CombinedEditor(_OffsetEditor):
    """Several directions at once: one offset ``Σ αᵢ · offsetᵢ``, then Eq. 1 once.

    ``offsets`` maps a name to its edit of α = 1 ([N,D], see :func:`direction_offset`);
    ``strengths`` (name -> α, missing names are 0) may be changed between calls, e.g. by
    sliders or keys. A call sums the offsets into one (a few [N,D] additions, cached while the
    strengths stay the same) and then costs what one :class:`LatentEditor` costs: one shift of
    w, and two passes through the generator's first k layers only when the summed edit reaches
    them, whatever the number of attributes. Runs without autograd.

    w: [B,N,D] or [N,D]; F: [B,C,R,R] or [C,R,R]. Returns tensors of the same shapes.
    """

    def __init__(self, generator: StyleGAN2Generator, offsets: dict[str, torch.Tensor],
                 strengths: dict[str, float] | None = None, k: int = DEFAULT_K) -> None:
        self.generator = generator
        self.k = int(k)
        generator.synthesis.feature_shape(self.k)  # validates k
        shape = (generator.n_latent, generator.style_dim)
        self.offsets: dict[str, torch.Tensor] = {}
        for name, offset in offsets.items():
            if tuple(offset.shape) != shape:
                raise ValueError(f"offset {name!r} must be {list(shape)}, got "
                                 f"{list(offset.shape)}")
            self.offsets[name] = offset.detach().float().cpu()
            check_direction_values(self.offsets[name], name)
        unknown = set(strengths or {}) - set(self.offsets)
        if unknown:
            raise ValueError(f"strengths for unknown names {sorted(unknown)}; the editor has "
                             f"{sorted(self.offsets)}")
        #: name -> α; change freely between calls.
        self.strengths: dict[str, float] = {name: 0.0 for name in self.offsets}
        self.strengths.update({name: check_strength(a) for name, a in (strengths or {}).items()})
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, tuple[int, int], bool] | None = None
        self._on_device: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def active_names(self) -> frozenset[str]:
        """The names of the directions in force (a non-zero strength)."""
        return frozenset(name for name, alpha in self.strengths.items() if alpha != 0.0)

    @classmethod
    def from_directions(cls, generator: StyleGAN2Generator,
                        directions: dict[str, Direction | torch.Tensor],
                        strengths: dict[str, float] | None = None, k: int = DEFAULT_K,
                        check: bool = True) -> CombinedEditor:
        """From directions (each on its own layers), checked against the generator once."""
        fingerprint = None
        offsets = {}
        for name, direction in directions.items():
            if check and isinstance(direction, Direction):
                fingerprint = fingerprint or generator_fingerprint(generator)
                direction.check_generator(generator, fingerprint=fingerprint)
            offsets[name] = direction_offset(direction, generator.n_latent, generator.style_dim)
        return cls(generator, offsets, strengths, k)

    @classmethod
    def from_editors(cls, editors: dict[str, LatentEditor]) -> CombinedEditor:
        """Join single-direction editors (their offsets and strengths; same generator and k)."""
        if not editors:
            raise ValueError("no editors to combine")
        first = next(iter(editors.values()))
        for name, editor in editors.items():
            if editor.generator is not first.generator or editor.k != first.k:
                raise ValueError(f"editor {name!r} has another generator or k")
        return cls(first.generator, {name: e.offset for name, e in editors.items()},
                   {name: e.strength for name, e in editors.items()}, first.k)

    @property
    def names(self) -> list[str]:
        return list(self.offsets)

    def __repr__(self) -> str:
        edits = ", ".join(f"{name}={alpha:g}" for name, alpha in self.strengths.items())
        return f"CombinedEditor({edits}, k={self.k})"

    def _combined(self) -> tuple[torch.Tensor, tuple[int, int], bool]:
        key = tuple(sorted(self.strengths.items()))
        if key != self._cache_key or self._cache is None:
            unknown = set(self.strengths) - set(self.offsets)
            if unknown:
                raise KeyError(f"no direction named {sorted(unknown)[0]!r}; the editor has "
                               f"{', '.join(self.offsets)}")
            total = torch.zeros_like(next(iter(self.offsets.values())))
            for name, alpha in self.strengths.items():
                check_strength(alpha)  # sliders and keys change them between calls
                if alpha != 0.0:
                    total += alpha * self.offsets[name]
            self._cache = (total, _moved_rows(total), bool(total[: self.k].any()))
            self._cache_key = key
            self._on_device.clear()
        return self._cache

    @property
    def offset(self) -> torch.Tensor:
        """The summed edit Σ αᵢ · offsetᵢ at the current strengths, [N,D] float32 (CPU)."""
        return self._combined()[0]

    @property
    def moves_features(self) -> bool:
        """Whether the summed edit reaches layers below k (then F̃ ≠ F)."""
        return self._combined()[2]

    @torch.no_grad()
    def __call__(self, w: torch.Tensor,
                 features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, rows, moves_features = self._combined()
        if rows[1] <= rows[0]:
            return w, features
        return self._apply(w, features, total, 1.0, rows, moves_features)
