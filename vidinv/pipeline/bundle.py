"""Load a model folder and turn its networks into the plain callables the stages use.

A model folder holds ``generator.safetensors``, ``encoder.safetensors`` (native formats, the
encoder's average latent included), optionally ``directions/*.safetensors`` and a
``MODEL_CARD.md``. The engines (backend, export, cache, TensorRT profiles) are made by
:mod:`vidinv.engines`; here the model's cache folder is chosen (per fingerprint, under the user
cache) and passed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vidinv.errors import CheckpointError, InputFileError
from vidinv.models.encoder import FEATURE_INDEX, FeatureStyleEncoder, check_encoder_matches
from vidinv.models.stylegan2 import StyleGAN2Generator

if TYPE_CHECKING:
    from vidinv.config import EngineSettings
    from vidinv.engines.model_graphs import ModelEngines

GENERATOR_FILE = "generator.safetensors"
ENCODER_FILE = "encoder.safetensors"
DIRECTIONS_FOLDER = "directions"


@dataclass
class ModelBundle:
    """A generator and its encoder (and the folder they came from)."""

    generator: StyleGAN2Generator
    encoder: FeatureStyleEncoder
    folder: Path
    k: int = FEATURE_INDEX

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
        check_encoder_matches(encoder, generator, FEATURE_INDEX)
    except ValueError as error:
        raise CheckpointError(f"{folder}: the encoder does not fit the generator ({error})"
                              ) from None
    return ModelBundle(generator=generator, encoder=encoder, folder=folder)


def engine_cache_folder(bundle: ModelBundle) -> Path:
    """Where this model's ONNX files and TensorRT engines are kept: the user cache, per
    fingerprint of the weights (``vidinv engines build`` and ``edit`` both use it)."""
    from vidinv.models.registry import default_cache_dir

    return default_cache_dir() / "engines" / bundle.fingerprint()


def make_model_engines(bundle: ModelBundle, engine: EngineSettings,
                       with_reconstruction: bool = False, build_missing: bool = True
                       ) -> ModelEngines:
    """The model's encode and edit+render callables for the ``[engine]`` settings.

    Everything about backends (export, cache, TensorRT profiles) is in :mod:`vidinv.engines`;
    this passes the settings and the model's cache folder.
    """
    from vidinv.engines.model_graphs import make_model_engines as make

    return make(bundle.generator, bundle.encoder, backend=engine.backend,
                device=engine.device or None, precision=engine.precision or None,
                batch_size=engine.batch_size, with_reconstruction=with_reconstruction,
                cache_dir=engine_cache_folder(bundle), k=bundle.k,
                spec_path=engine.spec or None, build_missing=build_missing,
                threads=engine.threads)
