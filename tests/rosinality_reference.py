"""Test-only functional reference of rosinality/stylegan2-pytorch's ``Generator`` forward.

Independent re-statement (not a copy) of the arithmetic in rosinality's ``model.py``: the
*fused* modulated convolution (per-sample weights applied as a grouped convolution, a grouped
transposed convolution followed by the ``Blur`` for up-sampling), ``EqualLinear`` scaling,
``FusedLeakyReLU`` (``leaky_relu(x + b, 0.2) * sqrt(2)``), ``NoiseInjection`` and ``ToRGB``
with its ``Upsample`` skip, all in the same operation order as the original so that our own
generator (``vidinv.models.stylegan2``, non-fused modulation) can be checked against it.

It consumes a ``g_ema`` state dict with rosinality's exact key names and shapes;
:func:`random_rosinality_state` builds one with non-trivial random values in every tensor.
Verified once (outside the repo) against rosinality's own ``Generator`` running on CPU with
their native ``upfirdn2d`` and the CPU branch of ``fused_leaky_relu``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "BLUR_TAPS",
    "default_channels",
    "random_rosinality_state",
    "rosinality_features",
    "rosinality_forward",
    "rosinality_mapping",
]

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
LR_MLP = 0.01  # rosinality's default ``lr_mlp``: mapping EqualLinear lr multiplier
_SLOPE = 0.2
_ACT_GAIN = 2**0.5
_EPS = 1e-8


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's ``Generator.channels`` table."""
    cm = channel_multiplier
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * cm,
        128: 128 * cm,
        256: 64 * cm,
        512: 32 * cm,
        1024: 16 * cm,
    }


def _blur_kernel(factor: int) -> torch.Tensor:
    """``make_kernel([1, 3, 3, 1]) * factor**2`` (normalised outer product, float32)."""
    k = torch.tensor(BLUR_TAPS, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    k /= k.sum()
    return k * (factor**2)


def _log_size(size: int) -> int:
    log_size = int(math.log(size, 2))
    if size < 8 or 2**log_size != size:
        raise ValueError(f"size must be a power of two >= 8, got {size}")
    return log_size


# --------------------------------------------------------------------------------------
# random state
# --------------------------------------------------------------------------------------


def random_rosinality_state(
    size: int,
    style_dim: int = 512,
    n_mlp: int = 2,
    channels: dict[int, int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A ``g_ema`` state dict with rosinality's exact keys/shapes and random values.

    Every tensor is non-trivial (unlike rosinality's init, where biases and noise strengths
    are zero) so that every term of the forward contributes. Mapping weights follow the
    ``lr_mul`` storage convention (``randn / lr_mul``); mapping biases are stored so that
    the effective bias ``bias * lr_mul`` is ~0.1·N(0, 1). Modulation biases are ``1 ± ...``
    (mostly positive, some negative). The two FIR kernels hold their fixed values.
    """
    log_size = _log_size(size)
    ch = dict(default_channels(2) if channels is None else channels)
    missing = [2**r for r in range(2, log_size + 1) if 2**r not in ch]
    if missing:
        raise ValueError(f"channels lacks resolutions {missing}")

    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    sd: dict[str, torch.Tensor] = {}

    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"] = randn(style_dim, style_dim) / LR_MLP
        sd[f"style.{i}.bias"] = randn(style_dim) * (0.1 / LR_MLP)

    def modulated(prefix: str, cin: int, cout: int, k: int, up: bool) -> None:
        sd[f"{prefix}.weight"] = randn(1, cout, cin, k, k)
        if up:
            sd[f"{prefix}.blur.kernel"] = _blur_kernel(2)
        sd[f"{prefix}.modulation.weight"] = randn(cin, style_dim)
        sd[f"{prefix}.modulation.bias"] = 1.0 + 0.5 * randn(cin)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        modulated(f"{prefix}.conv", cin, cout, 3, up)
        sd[f"{prefix}.noise.weight"] = 0.5 * randn(1)
        sd[f"{prefix}.activate.bias"] = 0.2 * randn(cout)

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        sd[f"{prefix}.bias"] = 0.2 * randn(1, 3, 1, 1)
        if up:
            sd[f"{prefix}.upsample.kernel"] = _blur_kernel(2)
        modulated(f"{prefix}.conv", cin, 3, 1, False)

    c4 = ch[4]
    sd["input.input"] = randn(1, c4, 4, 4)
    styled("conv1", c4, c4, up=False)
    to_rgb("to_rgb1", c4, up=False)

    convs: list[tuple[int, int, bool]] = []
    in_ch = c4
    for r in range(3, log_size + 1):
        out_ch = ch[2**r]
        convs += [(in_ch, out_ch, True), (out_ch, out_ch, False)]
        in_ch = out_ch
    for i, (cin, cout, up) in enumerate(convs):
        styled(f"convs.{i}", cin, cout, up)
    for j in range(log_size - 2):
        to_rgb(f"to_rgbs.{j}", convs[2 * j + 1][1], up=True)

    num_layers = (log_size - 2) * 2 + 1
    for i in range(num_layers):
        res = 2 ** ((i + 5) // 2)
        sd[f"noises.noise_{i}"] = randn(1, 1, res, res)
    return sd


# --------------------------------------------------------------------------------------
# building blocks (rosinality's arithmetic, functional form)
# --------------------------------------------------------------------------------------


def _fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # CPU branch of op.fused_act.fused_leaky_relu
    rest = [1] * (x.ndim - bias.ndim - 1)
    return F.leaky_relu(x + bias.view(1, bias.shape[0], *rest), negative_slope=_SLOPE) * _ACT_GAIN


def _upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """upfirdn2d with down=1 and non-negative, symmetric-per-axis pads (all this needs)."""
    pad0, pad1 = pad
    if pad0 < 0 or pad1 < 0:
        raise ValueError("negative pads are not needed by the generator")
    b, c, h, w = x.shape
    if up > 1:  # zero insertion: sample at (up*i, up*j)
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)


def _equal_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lr_mul: float = 1):
    scale = (1 / math.sqrt(weight.shape[1])) * lr_mul
    return F.linear(x, weight * scale, bias=bias * lr_mul)


def _modulated_conv(
    state: dict[str, torch.Tensor],
    prefix: str,
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    demodulate: bool = True,
    upsample: bool = False,
) -> torch.Tensor:
    """rosinality ``ModulatedConv2d.forward`` with ``fused=True`` (no downsample)."""
    batch, in_ch, height, width = x.shape
    weight_p = state[f"{prefix}.weight"]  # [1, out, in, k, k]
    _, out_ch, _, k, _ = weight_p.shape
    scale = 1 / math.sqrt(in_ch * k**2)

    style = _equal_linear(
        w, state[f"{prefix}.modulation.weight"], state[f"{prefix}.modulation.bias"]
    ).view(batch, 1, in_ch, 1, 1)
    weight = scale * weight_p * style
    if demodulate:
        demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + _EPS)
        weight = weight * demod.view(batch, out_ch, 1, 1, 1)
    weight = weight.view(batch * out_ch, in_ch, k, k)

    x = x.view(1, batch * in_ch, height, width)
    if upsample:
        weight = weight.view(batch, out_ch, in_ch, k, k)
        weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
        out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
        _, _, height, width = out.shape
        out = out.view(batch, out_ch, height, width)
        # Blur(blur_kernel, pad=(pad0, pad1), upsample_factor=2)
        factor = 2
        p = (len(BLUR_TAPS) - factor) - (k - 1)
        pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
        return _upfirdn2d(out, state[f"{prefix}.blur.kernel"], pad=pad)
    out = F.conv2d(x, weight, padding=k // 2, groups=batch)
    _, _, height, width = out.shape
    return out.view(batch, out_ch, height, width)


def _styled_conv(state, prefix, x, w, noise, *, upsample=False):
    out = _modulated_conv(state, f"{prefix}.conv", x, w, upsample=upsample)
    out = out + state[f"{prefix}.noise.weight"] * noise  # NoiseInjection
    return _fused_leaky_relu(out, state[f"{prefix}.activate.bias"])


def _to_rgb(state, prefix, x, w, skip=None):
    out = _modulated_conv(state, f"{prefix}.conv", x, w, demodulate=False)
    out = out + state[f"{prefix}.bias"]
    if skip is not None:
        factor = 2
        p = len(BLUR_TAPS) - factor
        pad = ((p + 1) // 2 + factor - 1, p // 2)
        skip = _upfirdn2d(skip, state[f"{prefix}.upsample.kernel"], up=factor, pad=pad)
        out = out + skip
    return out


def _num_to_rgbs(state: dict[str, torch.Tensor]) -> int:
    n = 0
    while f"to_rgbs.{n}.bias" in state:
        n += 1
    return n


def _synthesis(
    state: dict[str, torch.Tensor],
    ws: torch.Tensor,
    noises: list[torch.Tensor] | None,
    stop_at: int | None = None,
) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    log_size = _num_to_rgbs(state) + 2
    n_latent = log_size * 2 - 2
    num_layers = (log_size - 2) * 2 + 1
    if ws.ndim != 3 or ws.shape[1] != n_latent:
        raise ValueError(f"ws must be [B, {n_latent}, style_dim], got {tuple(ws.shape)}")
    if noises is None:
        noises = [state[f"noises.noise_{i}"] for i in range(num_layers)]
    if len(noises) != num_layers:
        raise ValueError(f"expected {num_layers} noises, got {len(noises)}")

    outs: list[torch.Tensor] = []

    def record(t: torch.Tensor) -> bool:
        outs.append(t)
        return stop_at is not None and len(outs) > stop_at

    latent = ws
    out = state["input.input"].repeat(latent.shape[0], 1, 1, 1)  # ConstantInput
    if record(out):
        return None, outs
    out = _styled_conv(state, "conv1", out, latent[:, 0], noises[0])
    if record(out):
        return None, outs
    skip = _to_rgb(state, "to_rgb1", out, latent[:, 1])

    i = 1
    for j in range(log_size - 2):
        out = _styled_conv(
            state, f"convs.{2 * j}", out, latent[:, i], noises[2 * j + 1], upsample=True
        )
        if record(out):
            return None, outs
        out = _styled_conv(state, f"convs.{2 * j + 1}", out, latent[:, i + 1], noises[2 * j + 2])
        if record(out):
            return None, outs
        skip = _to_rgb(state, f"to_rgbs.{j}", out, latent[:, i + 2], skip)
        i += 2
    return skip, outs


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def rosinality_mapping(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """``Generator.style``: PixelNorm then ``n_mlp`` EqualLinear(lr_mul=0.01, fused_lrelu)."""
    x = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + _EPS)
    i = 1
    while f"style.{i}.weight" in state:
        weight, bias = state[f"style.{i}.weight"], state[f"style.{i}.bias"]
        scale = (1 / math.sqrt(weight.shape[1])) * LR_MLP
        x = F.linear(x, weight * scale)
        x = _fused_leaky_relu(x, bias * LR_MLP)
        i += 1
    return x


def rosinality_forward(
    state: dict[str, torch.Tensor],
    ws: torch.Tensor,
    noises: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``g([ws], input_is_latent=True, randomize_noise=False)[0]`` with the fused path.

    ``ws``: [B, n_latent, style_dim] with ``n_latent = 2*log2(size) - 2``. ``noises``: one
    tensor per layer (default: the stored ``noises.noise_{i}`` buffers). Returns [B,3,S,S].
    """
    image, _ = _synthesis(state, ws, noises)
    assert image is not None
    return image


def rosinality_features(
    state: dict[str, torch.Tensor],
    ws: torch.Tensor,
    k: int,
    noises: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``outs[k]`` of the Feature-Style Encoder's modified generator (no feature insertion).

    ``outs[0]`` = constant input (repeated over batch), ``outs[1]`` = after ``conv1``,
    ``outs[2 + m]`` = after ``convs[m]`` (StyledConv output, i.e. post activation).
    """
    n_outs = 2 + 2 * _num_to_rgbs(state)
    if not 0 <= k < n_outs:
        raise IndexError(f"k must be in [0, {n_outs}), got {k}")
    _, outs = _synthesis(state, ws, noises, stop_at=k)
    return outs[k]
