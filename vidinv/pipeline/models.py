"""Load a model folder and turn its networks into the plain callables the stages use.

A model folder holds ``generator.safetensors``, ``encoder.safetensors`` (native formats, the
encoder's average latent included), optionally ``directions/*.safetensors`` and a
``MODEL_CARD.md``. This module is where the backend (torch, ONNX Runtime, TensorRT) is chosen
for the pipeline; ONNX files and TensorRT engines are cached per model under the user cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidinv.engines.base import Engine, TensorSpec
from vidinv.engines.factory import BACKENDS
from vidinv.errors import BackendUnavailableError, CheckpointError, InputFileError
from vidinv.models.encoder import FeatureStyleEncoder, check_encoder_matches
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.pipeline.stages import EncodeFn, RenderFn

GENERATOR_FILE = "generator.safetensors"
ENCODER_FILE = "encoder.safetensors"
DIRECTIONS_FOLDER = "directions"
#: Feature-tensor layer of the Feature-Style Encoder (003 §3.2): F replaces convs[3]'s output.
FEATURE_K = 5


@dataclass
class ModelBundle:
    """A generator and its encoder (and the folder they came from)."""

    generator: StyleGAN2Generator
    encoder: FeatureStyleEncoder
    folder: Path
    k: int = FEATURE_K

    @property
    def crop_size(self) -> int:
        """Side of the aligned crop the encoder takes."""
        return self.encoder.input_size

    @property
    def directions_folder(self) -> Path:
        return self.folder / DIRECTIONS_FOLDER

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the two weight files: the key of cached ONNX files and engines."""
        digest = hashlib.sha256()
        for name in (GENERATOR_FILE, ENCODER_FILE):
            with (self.folder / name).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]


#: The embedded default model, shipped inside the package (see MODEL_CARD.md there).
DEFAULT_MODEL_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def resolve_model_folder(name_or_path: str | None) -> Path:
    """The model folder for ``--model``: a path, or None for the embedded default model."""
    if name_or_path is None:
        if not (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
            raise InputFileError("this install has no embedded default model; pass --model "
                                 "FOLDER (a folder with generator.safetensors and "
                                 "encoder.safetensors)")
        return DEFAULT_MODEL_FOLDER
    return Path(name_or_path)


def load_model_bundle(folder: str | Path) -> ModelBundle:
    """Load ``folder``'s generator and encoder (eval, no grad); they must fit together."""
    from vidinv.models.encoder_io import load_encoder
    from vidinv.models.generator_io import load_generator

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: no such model folder; pass a folder with "
                             f"{GENERATOR_FILE} and {ENCODER_FILE} (see `vidinv models list`)")
    for name in (GENERATOR_FILE, ENCODER_FILE):
        if not (folder / name).is_file():
            raise InputFileError(f"{folder}: has no {name}; a model folder needs "
                                 f"{GENERATOR_FILE} and {ENCODER_FILE}")
    generator = load_generator(folder / GENERATOR_FILE)
    encoder = load_encoder(folder / ENCODER_FILE)
    try:
        check_encoder_matches(encoder, generator, FEATURE_K)
    except ValueError as error:
        raise CheckpointError(f"{folder}: the encoder does not fit the generator ({error})"
                              ) from None
    return ModelBundle(generator=generator, encoder=encoder, folder=folder)


class _EncoderGraph(nn.Module):
    """image [B,3,S,S] in [-1,1] -> (w [B,L,512], features [B,C,h,w])."""

    def __init__(self, encoder: FeatureStyleEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(image)


def _encoder_specs(encoder: FeatureStyleEncoder) -> tuple[tuple[TensorSpec, ...],
                                                           tuple[TensorSpec, ...]]:
    size = encoder.input_size
    inputs = (TensorSpec("image", ("batch", 3, size, size), "float32"),)
    outputs = (TensorSpec("w", ("batch", encoder.n_latent, encoder.style_dim), "float32"),
               TensorSpec("features", ("batch", *encoder.feature_shape), "float32"))
    return inputs, outputs


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of "
                                      f"{', '.join(BACKENDS)}")


def _cache_folder(bundle: ModelBundle) -> Path:
    from vidinv.models.registry import default_cache_dir

    return default_cache_dir() / "engines" / bundle.fingerprint()


def _onnx_file(bundle: ModelBundle, name: str, module: nn.Module,
               example: dict[str, torch.Tensor], outputs: list[str]) -> Path:
    """The model's exported graph ``name``.onnx, exported once and cached."""
    from vidinv.engines.onnx_export import export_onnx

    path = _cache_folder(bundle) / f"{name}.onnx"
    if not path.is_file():
        axes = {tensor: {0: "batch"} for tensor in [*example, *outputs]}
        export_onnx(module, example, outputs, path, dynamic_axes=axes)
    return path


def _engine(bundle: ModelBundle, name: str, module: nn.Module,
            specs: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
            example: dict[str, torch.Tensor], backend: str, device: str) -> Engine:
    from vidinv.engines.factory import create_engine

    _check_backend(backend)
    inputs, outputs = specs
    if backend == "torch":
        return create_engine("torch", module=module, input_specs=inputs, output_specs=outputs,
                             device=device, name=name)
    onnx_path = _onnx_file(bundle, name, module, example, [spec.name for spec in outputs])
    if backend == "onnx":
        return create_engine("onnx", onnx_path=onnx_path, device=device, name=name)
    from vidinv.engines.generator_export import load_generator_spec
    from vidinv.engines.trt_engine import batch_profile

    build = load_generator_spec().tensorrt
    profile = batch_profile(inputs, build.min_batch, build.opt_batch, build.max_batch, "batch")
    return create_engine("tensorrt", onnx_path=onnx_path, cache_dir=_cache_folder(bundle),
                         profile=profile, device=device, name=name)


def make_encode_fn(bundle: ModelBundle, backend: str = "torch",
                   device: str = "cpu") -> EncodeFn:
    """The encoder as ``x [B,3,S,S] -> (w, F)`` on the chosen backend."""
    module = _EncoderGraph(bundle.encoder)
    size = bundle.encoder.input_size
    example = {"image": torch.zeros(2, 3, size, size)}
    engine = _engine(bundle, "encoder", module, _encoder_specs(bundle.encoder), example,
                     backend, device)

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = engine(image=images)
        return out["w"].cpu(), out["features"].cpu()

    return encode


def make_render_fn(bundle: ModelBundle, backend: str = "torch",
                   device: str = "cpu") -> RenderFn:
    """The generator as ``(w, F) -> image`` (F fed at layer k) on the chosen backend."""
    from vidinv.engines.generator_export import (
        SynthesisWithFeaturesModule,
        synthesis_features_specs,
    )

    generator = bundle.generator
    module = SynthesisWithFeaturesModule(generator, bundle.k)
    ws = torch.zeros(2, generator.n_latent, generator.style_dim)
    example = {"ws": ws, "features": generator.features(ws, bundle.k)}
    engine = _engine(bundle, f"synthesis_features_k{bundle.k}", module,
                     synthesis_features_specs(generator, bundle.k), example, backend, device)

    def render(w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return engine(ws=w, features=features)["image"].cpu()

    return render
