"""The pipeline's two graphs, and the callables that run them on the chosen backend.

* the encoder: ``image`` [B,3,S,S] in [-1,1] -> ``w`` [B,L,512] (W+), ``features`` [B,C,h,w];
* the edit and the render as ONE graph: ``w``, ``features`` and ``offset`` [B,L,512] ->
  ``image``, the edit E = G(w̃, F̃) [B,3,R,R], and — in the ``edit_render_reconstruction``
  graph — ``reconstruction``, the unedited R = G(w, F), rendered in the same generator batch.

The edit inside the graph is paper 003's Eq. 1 with w̃ = w + offset (written once, in
:meth:`~vidinv.models.stylegan2.SynthesisNetwork.edited_features`)::

    F̃ = F + G.features(w̃, k) − G.features(w, k),      E = G.synthesis(w̃, features=F̃, k)

``offset`` is the whole W+ edit of each sample, strengths included: Σ_i α_i · d_i over the
attributes being edited (zero rows on the layers an edit leaves alone, all zeros to invert).
So one engine serves every direction, every strength (a live slider), several attributes at
once and per-sample strengths; nothing is rebuilt when the edit changes. The graph always runs
the two passes through the first k layers (cheap: at most 16×16 there); an offset that touches
no layer below k gives F̃ = F.

:func:`make_model_engines` is the one place the pipeline's engines are made
(:func:`engines_for_bundle` calls it for a model folder with the ``[engine]`` settings): it picks
the backend and device, exports the ONNX files into the cache folder it is given (once), and builds
or loads the TensorRT engines with a profile from the pipeline's batch size. What it returns are
plain callables; tensors stay on the engine's device between them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vidinv.engines.base import Engine, TensorSpec
from vidinv.models.encoder import FEATURE_INDEX

if TYPE_CHECKING:
    from vidinv.config import EngineSettings
    from vidinv.models.folder import ModelBundle

#: images [B,3,S,S] float32 in [-1,1] -> (w [B,L,512], F [B,C,h,w]) on the engine's device
EncodeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: (w [B,L,512], F [B,C,h,w], offset [B,L,512]) -> (E [B,3,R,R], R [B,3,R,R] or None), about
#: [-1,1], on the engine's device; R only from an engine made with ``with_reconstruction``
EditRenderFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                        tuple[torch.Tensor, torch.Tensor | None]]


class EncoderGraph(nn.Module):
    """image [B,3,S,S] in [-1,1] -> (w [B,L,512], features [B,C,h,w])."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(image)


class EditRenderGraph(nn.Module):
    """(w [B,L,D], features [B,C,h,w], offset [B,L,D]) -> image [B,3,R,R] (the edit E), and
    with ``with_reconstruction`` also reconstruction [B,3,R,R] (R = G(w, F)).

    Shares its parameters with ``generator.synthesis``. See the module docstring for the maths.
    """

    def __init__(self, generator: nn.Module, k: int = FEATURE_INDEX,
                 with_reconstruction: bool = False) -> None:
        super().__init__()
        self.synthesis = generator.synthesis
        self.k = int(k)
        self.synthesis.feature_shape(self.k)  # validates k
        self.with_reconstruction = bool(with_reconstruction)

    def forward(self, w: torch.Tensor, features: torch.Tensor, offset: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch = w.shape[0]  # slices, not chunk(2): chunk fixes the exported batch size
        w_edit = w + offset
        features_edit = self.synthesis.edited_features(w, w_edit, features, self.k)
        if not self.with_reconstruction:
            return self.synthesis(w_edit, features=features_edit, k=self.k)
        images = self.synthesis(torch.cat([w_edit, w]),
                                features=torch.cat([features_edit, features]), k=self.k)
        return images[:batch], images[batch:]


def encoder_specs(encoder: Any, batch_dim: str = "batch"
                  ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of :class:`EncoderGraph`."""
    size = encoder.input_size
    inputs = (TensorSpec("image", (batch_dim, 3, size, size)),)
    outputs = (TensorSpec("w", (batch_dim, encoder.n_latent, encoder.style_dim)),
               TensorSpec("features", (batch_dim, *encoder.feature_shape)))
    return inputs, outputs


def edit_render_specs(generator: Any, k: int = FEATURE_INDEX, with_reconstruction: bool = False,
                      batch_dim: str = "batch"
                      ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of :class:`EditRenderGraph`."""
    codes = (batch_dim, generator.n_latent, generator.style_dim)
    inputs = (TensorSpec("w", codes),
              TensorSpec("features", (batch_dim, *generator.synthesis.feature_shape(k))),
              TensorSpec("offset", codes))
    image = (batch_dim, 3, generator.resolution, generator.resolution)
    outputs = (TensorSpec("image", image),)
    if with_reconstruction:
        outputs += (TensorSpec("reconstruction", image),)
    return inputs, outputs


def _examples(generator: Any, encoder: Any, k: int, batch: int
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Seeded example inputs (CPU, float32) for the encoder and the edit+render export."""
    seed = torch.Generator().manual_seed(0)
    size = encoder.input_size
    image = torch.rand(batch, 3, size, size, generator=seed) * 2 - 1
    w = torch.randn(batch, generator.n_latent, generator.style_dim, generator=seed)
    offset = 0.1 * torch.randn(batch, generator.n_latent, generator.style_dim, generator=seed)
    device = next(generator.parameters()).device
    with torch.no_grad():
        features = generator.features(w.to(device), k).cpu()
    return {"image": image}, {"w": w, "features": features, "offset": offset}


def _repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """[B,…] -> [batch,…], cycling through the B samples."""
    return tensor[torch.arange(batch) % tensor.shape[0]]


@dataclass(frozen=True)
class ModelEngines:
    """The pipeline's networks as callables, and the engines behind them (for reports)."""

    encode: EncodeFn
    edit_render: EditRenderFn
    encoder_engine: Engine
    edit_render_engine: Engine
    with_reconstruction: bool

    @property
    def device(self) -> str:
        return self.edit_render_engine.device


def make_model_engines(generator: nn.Module, encoder: nn.Module, *, backend: str = "torch",
                       device: str | None = None, precision: str | None = None,
                       batch_size: int = 1, with_reconstruction: bool = False,
                       cache_dir: str | os.PathLike[str] | None = None,
                       k: int = FEATURE_INDEX, spec_path: str | os.PathLike[str] | None = None,
                       build_missing: bool = True, threads: int | None = None,
                       rebuild: bool = False) -> ModelEngines:
    """The encoder and the edit+render graph on ``backend`` (see the module docstring).

    Args:
        generator, encoder: float32 modules that fit each other (checked by the caller).
        backend: ``torch``, ``onnx`` or ``tensorrt``.
        device, precision: None lets the backend choose (:func:`~vidinv.engines.factory.
            default_device`, :func:`~vidinv.engines.factory.default_precision`).
        batch_size: the most samples the pipeline sends in one call; TensorRT's profile is
            min 1, opt ``batch_size``, max ``max(batch_size, spec max_batch)``.
        with_reconstruction: the edit+render graph also returns R = G(w, F).
        cache_dir: where ONNX files and engines are kept (needed for onnx and tensorrt); a
            folder per model, e.g. keyed by the weights' fingerprint.
        spec_path: the engine spec TOML; default: the one shipped in the package.
        build_missing: build a missing TensorRT engine (minutes) instead of failing.
        rebuild: build the TensorRT engines anew, replacing the cached ones.
        threads: ONNX Runtime's CPU threads per call; None or 0: its default (torch's pool is
            set by the pipeline while it runs).

    Raises BackendUnavailableError (naming the extra to install), EngineMismatchError for a
    cached engine built for something else, ValueError for a bad batch size.
    """
    from vidinv.engines.factory import engine_for_module
    from vidinv.engines.generator_export import load_generator_spec

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    spec = load_generator_spec(spec_path)
    kind = "edit_render_reconstruction" if with_reconstruction else "edit_render"
    encoder_example, edit_example = _examples(generator, encoder, k,
                                              spec.example_batch)
    common: dict[str, Any] = dict(backend=backend, device=device, precision=precision,
                                  batch_size=batch_size, cache_dir=cache_dir, spec=spec,
                                  build_missing=build_missing, threads=threads,
                                  rebuild=rebuild)
    encoder_engine = engine_for_module(
        EncoderGraph(encoder), encoder_specs(encoder, spec.batch_dim), encoder_example,
        spec.graphs["encoder"].file_name(k), **common)
    render_engine = engine_for_module(
        EditRenderGraph(generator, k, with_reconstruction),
        edit_render_specs(generator, k, with_reconstruction, spec.batch_dim), edit_example,
        spec.graphs[kind].file_name(k), **common)

    for engine, example in ((encoder_engine, encoder_example), (render_engine, edit_example)):
        if getattr(engine, "trace", False):  # trace the pipeline's batch now, not mid-run
            engine(**{name: _repeat_to_batch(t, batch_size) for name, t in example.items()})

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = encoder_engine(image=images)
        return out["w"], out["features"]

    def edit_render(w: torch.Tensor, features: torch.Tensor, offset: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = render_engine(w=w, features=features, offset=offset)
        return out["image"], out.get("reconstruction")

    return ModelEngines(encode=encode, edit_render=edit_render, encoder_engine=encoder_engine,
                        edit_render_engine=render_engine,
                        with_reconstruction=with_reconstruction)


def engines_for_bundle(bundle: ModelBundle, settings: EngineSettings,
                       with_reconstruction: bool = False, build_missing: bool = True,
                       rebuild: bool = False) -> ModelEngines:
    """A model folder's engines for the ``[engine]`` settings: :func:`make_model_engines` on
    the bundle's networks, with the model's own cache folder (per fingerprint)."""
    from vidinv.models.folder import engine_cache_folder

    return make_model_engines(
        bundle.generator, bundle.encoder, backend=settings.backend,
        device=settings.device or None, precision=settings.precision or None,
        batch_size=settings.batch_size, with_reconstruction=with_reconstruction,
        cache_dir=engine_cache_folder(bundle), k=bundle.k, spec_path=settings.spec or None,
        build_missing=build_missing, threads=settings.threads, rebuild=rebuild)
