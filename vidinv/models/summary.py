"""Facts about a generator for `vidinv models info`: sizes, parameters and FLOPs per image."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidinv.models.stylegan2 import StyleGAN2Generator


@dataclass(frozen=True)
class GeneratorSummary:
    resolution: int
    n_latent: int
    num_layers: int
    style_dim: int
    n_mlp: int
    channels: dict[int, int]
    conv_clamp: float | None
    parameters: int
    synthesis_gflop: float
    mapping_gflop: float

    def lines(self) -> list[str]:
        """Human-readable lines, one fact each."""
        channels = ", ".join(f"{res}:{count}" for res, count in self.channels.items())
        return [
            f"resolution      {self.resolution}",
            f"n_latent        {self.n_latent} (W+ codes of {self.style_dim})",
            f"layers          {self.num_layers} styled convs, mapping of {self.n_mlp} layers",
            f"channels        {channels}",
            f"conv_clamp      {self.conv_clamp}",
            f"parameters      {self.parameters:,}",
            f"synthesis       {self.synthesis_gflop:.2f} GFLOP per image (1 FLOP = 1 mul or add)",
            f"mapping         {self.mapping_gflop * 1e3:.2f} MFLOP per z",
        ]


def count_synthesis_flops(config: dict, features_k: int | None = None) -> int:
    """FLOPs of one synthesis pass (convolutions and matmuls), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        generator = StyleGAN2Generator(**config)
        ws = torch.zeros(1, generator.n_latent, generator.style_dim)
        with FlopCounterMode(display=False) as counter:
            if features_k is None:
                generator.synthesis(ws)
            else:
                shape = generator.synthesis.feature_shape(features_k)
                generator.synthesis(ws, features=torch.zeros(1, *shape), k=features_k)
    return int(counter.get_total_flops())


def _count_mapping_flops(config: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        generator = StyleGAN2Generator(**config)
        with FlopCounterMode(display=False) as counter:
            generator.mapping(torch.zeros(1, generator.style_dim))
    return int(counter.get_total_flops())


def summarize_generator(generator: StyleGAN2Generator) -> GeneratorSummary:
    synthesis = generator.synthesis
    channels = {4: int(synthesis.const.shape[1])}
    for layer in synthesis.layers:
        channels[int(layer.noise.shape[-1])] = int(layer.weight.shape[0])
    return GeneratorSummary(
        resolution=generator.resolution,
        n_latent=generator.n_latent,
        num_layers=generator.num_layers,
        style_dim=generator.style_dim,
        n_mlp=generator.config["n_mlp"],
        channels=channels,
        conv_clamp=generator.config["conv_clamp"],
        parameters=sum(p.numel() for p in generator.parameters()),
        synthesis_gflop=count_synthesis_flops(generator.config) / 1e9,
        mapping_gflop=_count_mapping_flops(generator.config) / 1e9,
    )
