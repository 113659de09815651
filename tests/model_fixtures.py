"""A tiny random model folder (generator + encoder + one direction) for pipeline tests.

Generator: 32 px, 16 channels, 2 mapping layers. Encoder: 128 px input, content stride 1, so
its 16×16×16 feature tensor fits the generator's k = 5 feature. Untrained: the faces it renders
are noise, which is all the plumbing tests need.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidinv.latent.directions import Direction, generator_fingerprint, save_directions
from vidinv.models.encoder import FeatureStyleEncoder
from vidinv.models.encoder_io import save_encoder
from vidinv.models.generator_io import save_generator
from vidinv.models.stylegan2 import StyleGAN2Generator


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval()
    generator.latent_avg.copy_(generator.compute_latent_avg(256))
    encoder = FeatureStyleEncoder(n_latent=generator.n_latent, input_size=128,
                                  widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1),
                                  feature_channels=16, content_stride=1).eval()
    encoder.set_latent_avg(generator.latent_avg)
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(generator, folder / "generator.safetensors")
    save_encoder(encoder, folder / "encoder.safetensors")
    smile = Direction(name="smile", vector=torch.randn(512) / 10, kind="interfacegan",
                      generator_fingerprint=generator_fingerprint(generator))
    (folder / "directions").mkdir(exist_ok=True)
    save_directions(folder / "directions" / "smile.safetensors", smile)
    return folder
