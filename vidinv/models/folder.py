"""The model folder: its files, loading and saving it, its fingerprint and engine cache folder.

A model folder is what ``--model`` names and what ``models assemble``, ``personalize`` and the
training commands write::

    generator.safetensors     the StyleGAN2 generator (native format, latent_avg included)
    encoder.safetensors       the Feature-Style Encoder that fits it
    directions/NAME.safetensors   edit directions (optional)
    MODEL_CARD.md             where the weights came from and what was checked (optional)
    evaluation.json           a personal model's build summary (optional)

A training run folder holds the network it trains under the same file name, beside
``training_state.safetensors`` (optimisers, step) to resume from.

This module is the one place these names are written, as diffusers' ``from_pretrained`` /
``save_pretrained`` own theirs. The engines made from a bundle (backend, export, cache,
TensorRT profiles) are :mod:`vidinv.engines`' business; here only their cache folder is chosen
(per fingerprint, under the user cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidinv.errors import CheckpointError, InputFileError
from vidinv.models import FEATURE_INDEX

if TYPE_CHECKING:
    from vidinv.models.encoder import FeatureStyleEncoder
    from vidinv.models.stylegan2 import StyleGAN2Generator

GENERATOR_FILE = "generator.safetensors"
ENCODER_FILE = "encoder.safetensors"
DIRECTIONS_FOLDER = "directions"
MODEL_CARD_FILE = "MODEL_CARD.md"
EVALUATION_FILE = "evaluation.json"
#: Beside a training run's network: what resuming it needs (optimisers, step, EMA).
TRAINING_STATE_FILE = "training_state.safetensors"

#: The embedded default model, shipped inside the package (see MODEL_CARD.md there).
DEFAULT_MODEL_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "default_model"


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
        return folder_fingerprint(self.folder)


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex) of a model folder's generator and encoder files."""
    digest = hashlib.sha256()
    for name in (GENERATOR_FILE, ENCODER_FILE):
        with (Path(folder) / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def direction_file(folder: str | Path, name: str) -> Path:
    """Where a model folder keeps the direction (or direction set) called ``name``."""
    return Path(folder) / DIRECTIONS_FOLDER / f"{name}.safetensors"


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a generator and an encoder file."""
    folder = Path(folder)
    return (folder / GENERATOR_FILE).is_file() and (folder / ENCODER_FILE).is_file()


def resolve_model_folder(name_or_path: str | None) -> Path:
    """The model folder for ``--model``: a path, or None for the embedded default model."""
    if name_or_path is None:
        if not (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
            raise InputFileError("this install has no embedded default model; pass --model "
                                 f"FOLDER (a folder with {GENERATOR_FILE} and {ENCODER_FILE})")
        return DEFAULT_MODEL_FOLDER
    return Path(name_or_path)


def load_model_bundle(folder: str | Path) -> ModelBundle:
    """Load ``folder``'s generator and encoder (eval, no grad); they must fit together."""
    from vidinv.models.encoder import check_encoder_matches
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


def save_model_folder(folder: str | Path, generator: StyleGAN2Generator,
                      encoder: FeatureStyleEncoder, *, card: str | None = None,
                      evaluation: Mapping[str, Any] | None = None) -> Path:
    """Write the networks (each file atomically), and the model card and evaluation summary
    when given, into ``folder`` (created if missing). Directions are written by their owner,
    :func:`vidinv.latent.directions.save_directions`, to :func:`direction_file` paths."""
    from vidinv.io_safety import write_atomically
    from vidinv.models.encoder_io import save_encoder
    from vidinv.models.generator_io import save_generator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(generator.cpu(), folder / GENERATOR_FILE)
    save_encoder(encoder.cpu(), folder / ENCODER_FILE)
    if evaluation is not None:
        write_atomically(folder / EVALUATION_FILE, json.dumps(evaluation, indent=2))
    if card is not None:
        write_atomically(folder / MODEL_CARD_FILE, card)
    return folder


def engine_cache_folder(bundle: ModelBundle) -> Path:
    """Where this model's ONNX files and TensorRT engines are kept: the user cache, per
    fingerprint of the weights (``vidinv engines build`` and ``edit`` both use it)."""
    from vidinv.models.registry import default_cache_dir

    return default_cache_dir() / "engines" / bundle.fingerprint()
