"""The Feature-Style Encoder (FSE, paper 003 §3.2): image -> (W+ codes, a 16×16 feature tensor).

Layout (parameter names equal the official ``fs_encoder_v2`` state dict, key for key)::

    x [B,3,S,S] in [-1,1]
    conv        stem: Conv3×3 (stride 1, no bias) -> BN -> PReLU         -> [B,w0,S,S]
    block_1..4  IR-ResNet stages of IBasicBlocks, each stride 2           -> [B,w_i,S/2^i,S/2^i]
    latent      AdaptiveAvgPool(3×3) of each stage, concatenated, flattened -> [B,9·Σw]
                styles.{j} = Linear(9·Σw, 512), j < n_latent              -> offsets [B,N,512]
    content_layer on block_3's output: BN, Conv3×3 w2->C, BN, PReLU(C),
                Conv3×3 C->C (stride ``content_stride``), BN            -> F [B,C,S/(8·s),S/(8·s)]

The default configuration is the official one (ArcFace iresnet50 backbone, widths
(64, 128, 256, 512), blocks (3, 4, 14, 3), 18 styles, 256 px input, ``fs_stride`` 2): 517 state
dict keys, plus our ``latent_avg`` buffer. ``forward`` returns ``w = offsets + latent_avg``; the
official code adds the generator's ``latent_avg`` outside the module, here it is a buffer
(zeros by default, then ``w`` is the raw offsets).

Matching a generator: the encoder's feature tensor replaces the generator's ``outs[k]``
(:data:`FEATURE_INDEX` = 5, the 16×16 output of ``convs[3]``), so ``feature_shape`` must equal
``G.synthesis.feature_shape(k)``: ``feature_channels`` = the generator's channel count at 16 px
(512 for FFHQ config-f) and ``input_size / (8 · content_stride)`` = 16, i.e. a 256 px input with
the official stride 2 (or 128 px with stride 1). ``n_latent`` must equal ``G.n_latent`` (18 at
1024 px). :func:`check_encoder_matches` says which of these differs.

The module never resizes or normalises; :func:`prepare_input` brings aligned crops to
``input_size`` the way the official pipeline does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidinv.models import FEATURE_INDEX  # k = 5; re-exported here

#: Side of the adaptive average pool of the latent branch.
POOL_SIZE = 3
#: Every BatchNorm in ArcFace's iresnet and in the official content layer uses this eps.
_BN_EPS = 1e-5


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.1)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                     bias=False)


class IBasicBlock(nn.Module):
    """ArcFace's pre-activation residual block (the "IR" block of iresnet).

    x [B,in,H,W] -> [B,out,H/stride,W/stride]:
    ``bn3(conv2(prelu(bn2(conv1(bn1(x)))))) + downsample(x)``, where ``conv2`` carries the stride
    and ``downsample`` (Conv1×1 with the stride, no bias, then BN) exists only when the stride or
    the channel count changes (otherwise the identity).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = _batch_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn2 = _batch_norm(out_channels)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, stride)
        self.bn3 = _batch_norm(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                _batch_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def _adaptive_pool_matrix(size: int, out: int) -> torch.Tensor:
    """[out, size] rows that average the bins of ``AdaptiveAvgPool`` (size -> out) along one axis.

    Bin i covers [floor(i·size/out), ceil((i+1)·size/out)); bins overlap when out does not divide
    size. ``P @ x @ Pᵀ`` equals ``adaptive_avg_pool2d(x, out)`` for square x up to float
    round-off (~1e-7 relative). It is written this way because torch.export decomposes adaptive
    pooling with non-dividing sizes (every stage of the official 256 px encoder) into gathers
    whose export takes seconds per stage; two matmuls with constant matrices export instantly
    and run as GEMMs in ONNX Runtime and TensorRT.
    """
    matrix = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _pool(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,H] -> [B,C,out,out] with ``matrix`` [out,H] from :func:`_adaptive_pool_matrix`."""
    if x.shape[-1] != matrix.shape[1] or x.shape[-2] != matrix.shape[1]:
        raise ValueError(f"pooling expects {matrix.shape[1]}×{matrix.shape[1]} maps, got "
                         f"{tuple(x.shape[-2:])}")
    matrix = matrix.to(x.dtype)
    return torch.matmul(torch.matmul(matrix, x), matrix.t())


def _stage(in_channels: int, out_channels: int, n_blocks: int) -> nn.Sequential:
    """One iresnet layer: a stride-2 block, then ``n_blocks - 1`` stride-1 blocks."""
    blocks = [IBasicBlock(in_channels, out_channels, stride=2)]
    blocks += [IBasicBlock(out_channels, out_channels) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class FeatureStyleEncoder(nn.Module):
    """Image [B,3,S,S] in [-1,1] -> (W+ codes [B,N,style_dim], features [B,C,h,h]).

    Args:
        n_latent: N, the number of W+ codes (the generator's ``n_latent``; 18 at 1024 px).
        style_dim: size of each code (512).
        input_size: S, the only input side ``forward`` accepts (official: 256).
        widths: channels of the four backbone stages; the stem has ``widths[0]``.
        blocks: IBasicBlocks per stage (iresnet50: 3, 4, 14, 3).
        feature_channels: C, channels of the feature tensor.
        content_stride: stride of the content layer's last conv (official ``fs_stride``: 2);
            the feature side is h = S / (8 · content_stride).

    Buffers: ``latent_avg`` [N,style_dim], added to the predicted offsets (zeros until set with
    :meth:`set_latent_avg`, e.g. to the generator's ``latent_avg``).

    The constructor never touches the disk; weights come from
    :func:`vidinv.models.encoder_io.load_encoder`.
    """

    def __init__(self, n_latent: int = 18, style_dim: int = 512, input_size: int = 256,
                 widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (3, 4, 14, 3), feature_channels: int = 512,
                 content_stride: int = 2) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        blocks = tuple(int(b) for b in blocks)
        if len(widths) != 4 or len(blocks) != 4 or min(widths + blocks) < 1:
            raise ValueError(f"widths and blocks must be four positive ints each, got "
                             f"{widths} and {blocks}")
        if content_stride not in (1, 2):
            raise ValueError(f"content_stride must be 1 or 2, got {content_stride}")
        step = 8 * content_stride
        if input_size < step or input_size % step:
            raise ValueError(f"input_size must be a positive multiple of {step} "
                             f"(8 × content_stride), got {input_size}")
        if n_latent < 1 or style_dim < 1 or feature_channels < 1:
            raise ValueError("n_latent, style_dim and feature_channels must be positive")
        self.config = {
            "n_latent": int(n_latent), "style_dim": int(style_dim),
            "input_size": int(input_size), "widths": list(widths), "blocks": list(blocks),
            "feature_channels": int(feature_channels), "content_stride": int(content_stride),
        }
        self.conv = nn.Sequential(_conv3x3(3, widths[0]), _batch_norm(widths[0]),
                                  nn.PReLU(widths[0]))
        self.block_1 = _stage(widths[0], widths[0], blocks[0])
        self.block_2 = _stage(widths[0], widths[1], blocks[1])
        self.block_3 = _stage(widths[1], widths[2], blocks[2])
        self.block_4 = _stage(widths[2], widths[3], blocks[3])
        self.content_layer = nn.Sequential(
            _batch_norm(widths[2]),
            _conv3x3(widths[2], feature_channels),
            _batch_norm(feature_channels),
            nn.PReLU(feature_channels),
            _conv3x3(feature_channels, feature_channels, stride=content_stride),
            _batch_norm(feature_channels),
        )
        # AdaptiveAvgPool2d(3) of each stage output, as constant averaging matrices (see
        # _adaptive_pool_matrix); non-persistent, so the state dict keeps the official keys.
        side = input_size
        for stage in range(1, 5):
            side = (side + 1) // 2  # a 3×3 stride-2 conv with padding 1
            self.register_buffer(f"_pool_{stage}", _adaptive_pool_matrix(side, POOL_SIZE),
                                 persistent=False)
        pooled = sum(widths) * POOL_SIZE * POOL_SIZE
        self.styles = nn.ModuleList(nn.Linear(pooled, style_dim) for _ in range(n_latent))
        self.register_buffer("latent_avg", torch.zeros(n_latent, style_dim))

    @property
    def n_latent(self) -> int:
        return self.config["n_latent"]

    @property
    def style_dim(self) -> int:
        return self.config["style_dim"]

    @property
    def input_size(self) -> int:
        return self.config["input_size"]

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(C, h, h) of the feature tensor; h = input_size / (8 · content_stride)."""
        side = self.input_size // (8 * self.config["content_stride"])
        return (self.config["feature_channels"], side, side)

    @torch.no_grad()
    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Set the base added to the offsets: [style_dim], [1,style_dim] or [N,style_dim]."""
        latent_avg = torch.as_tensor(latent_avg)
        shape = tuple(latent_avg.shape)
        if shape not in ((self.style_dim,), (1, self.style_dim),
                         (self.n_latent, self.style_dim)):
            raise ValueError(f"latent_avg has shape {shape}; expected ({self.style_dim},), "
                             f"(1, {self.style_dim}) or ({self.n_latent}, {self.style_dim})")
        self.latent_avg.copy_(latent_avg.reshape(-1, self.style_dim).expand_as(self.latent_avg))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] float in [-1,1], S = input_size.

        Returns ``w`` [B,N,style_dim] (offsets + latent_avg) and ``features`` [B,C,h,h]
        (``feature_shape``).
        """
        size = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"encoder input must be [B,3,{size},{size}], got "
                             f"{tuple(x.shape)}; resize with prepare_input(images, {size})")
        if not x.is_floating_point():
            raise ValueError(f"encoder input must be a float tensor in [-1,1], got {x.dtype}")
        x = self.conv(x)
        x = self.block_1(x)
        pooled = [_pool(x, self._pool_1)]
        x = self.block_2(x)
        pooled.append(_pool(x, self._pool_2))
        x = self.block_3(x)
        features = self.content_layer(x)
        pooled.append(_pool(x, self._pool_3))
        x = self.block_4(x)
        pooled.append(_pool(x, self._pool_4))
        flat = torch.cat(pooled, dim=1).flatten(1)
        offsets = torch.stack([style(flat) for style in self.styles], dim=1)
        return offsets + self.latent_avg.to(offsets.dtype), features


def prepare_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize aligned crops [B,3,H,H] in [-1,1] to the encoder's input [B,3,size,size].

    When H = size · 2^n (n ≥ 1) this is what the official pipeline does: n bilinear ×0.5 steps
    (``align_corners=False``, no antialias), e.g. 1024 -> 512 -> 256. Any other side is brought
    to ``size`` by one bilinear resize (antialiased when shrinking). H = size is returned as is.
    The values are not changed otherwise (no normalisation).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1,1], got {images.dtype}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = images.shape[-2:]
    if height != width:
        raise ValueError(f"images must be square (aligned crops), got {height}×{width}")
    if height == size:
        return images
    side = height
    halvings = 0
    while side > size and side % 2 == 0:
        side //= 2
        halvings += 1
    if side == size:
        for _ in range(halvings):
            images = F.interpolate(images, scale_factor=0.5, mode="bilinear",
                                   align_corners=False)
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=height > size)


def check_encoder_matches(encoder: FeatureStyleEncoder, generator: nn.Module,
                          k: int = FEATURE_INDEX) -> None:
    """Raise ValueError (one line) unless ``encoder``'s outputs fit ``generator`` at index k."""
    problems = []
    if encoder.n_latent != generator.n_latent:
        problems.append(f"{encoder.n_latent} codes vs the generator's {generator.n_latent}")
    if encoder.style_dim != generator.style_dim:
        problems.append(f"style_dim {encoder.style_dim} vs {generator.style_dim}")
    expected = tuple(generator.synthesis.feature_shape(k))
    if encoder.feature_shape != expected:
        problems.append(f"features {encoder.feature_shape} vs the generator's {expected} at "
                        f"k={k} (set feature_channels={expected[0]} and input_size="
                        f"{expected[1] * 8 * encoder.config['content_stride']})")
    if problems:
        raise ValueError("encoder does not match the generator: " + "; ".join(problems))
