"""StyleGAN2 (config-f family) in plain PyTorch, written for export.

The generator is split into a :class:`MappingNetwork` (z -> w) and a :class:`SynthesisNetwork`
(W+ -> image). The synthesis path is written so that ONNX and TensorRT see static weights:

* modulation is in the non-fused form — scale the activations by the styles, convolve with the
  static weight, multiply the output by the demodulation coefficients;
* demodulation is fp16-safe: the styles of each sample are divided by their largest magnitude
  before use (demodulation cancels any per-sample scale, so the result is unchanged), which keeps
  the sum of squared weights below ~1 in half precision;
* noise is a stored buffer per layer (constant noise); nothing is drawn inside ``forward``.

Layer order follows rosinality/stylegan2-pytorch: ``layers[0]`` is ``conv1`` (4 px) and
``layers[1 + m]`` is ``convs[m]``; ``to_rgbs[0]`` is ``to_rgb1`` and ``to_rgbs[1 + j]`` is
``to_rgbs[j]``. Layer ``j`` is driven by ``w[:, j]`` and ``to_rgbs[t]`` by ``w[:, 2t + 1]``.

Feature tensors follow the Feature-Style Encoder (paper 003, §3.2): ``features(ws, k)`` returns
``outs[k]``, where ``outs[0]`` is the constant input and ``outs[k]`` (k ≥ 1) is the output of
``layers[k - 1]``. ``synthesis(ws, features=F, k=k)`` feeds ``F`` into ``layers[k]`` in place of
``outs[k]``; the RGB skip accumulated before that point still comes from the W+ path, exactly as in
the official code. With k = 5, F is the 16×16 output of ``convs[3]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Resolution of the constant input.
#: 2^-14, the smallest normal fp16 number: the epsilon floor of the demodulation. With styles
#: scaled to a largest magnitude of 1 the sum it guards is ≳ 1/in_channels, far above it, so
#: it changes nothing in fp32 and keeps an all-zero weight row from giving inf in fp16.
_FP16_FLOOR = 2.0 ** -14
#: The 1-D FIR filter StyleGAN2 uses for every up-sampling.
_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)


def layer_channels(resolution: int, channel_multiplier: float, channel_max: int) -> int:
    """Channels of the feature maps at ``resolution`` px.

    Equals rosinality's table (512 up to 32 px, then 256·cm, 128·cm, ...) when ``channel_max``
    is 512, and NVIDIA's ``min(channel_base / R, channel_max)`` with channel_base = 16384·cm.
    """
    return int(min(int(16384 * channel_multiplier) // resolution, channel_max))


def _blur_kernel_2d(gain: float) -> torch.Tensor:
    """[4,4] float32 outer([1,3,3,1]) normalised to sum ``gain``."""
    taps = torch.tensor(_BLUR_TAPS, dtype=torch.float32)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum() * gain


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate.

    The stored weight is ``randn / lr_mul``; at run time it is multiplied by ``lr_mul / sqrt(in)``
    and the bias by ``lr_mul`` (rosinality's and NVIDIA's convention alike).
    """

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0,
                 lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,in] -> [B,out]."""
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)


class MappingNetwork(nn.Module):
    """z [B,style_dim] -> w [B,style_dim]: pixel norm, then ``n_mlp`` leaky-ReLU layers."""

    def __init__(self, style_dim: int = 512, n_mlp: int = 8, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mul) for _ in range(n_mlp)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B,512] (any scale) -> w: [B,512]. No truncation."""
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), _LRELU_SLOPE) * _LRELU_GAIN
        return x


class StyledConv(nn.Module):
    """Modulated 3×3 convolution (optionally ×2 up-sampling), constant noise, bias, leaky ReLU.

    Input [B,in,R,R] -> output [B,out,R',R'] with R' = 2R when ``upsample`` else R.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 upsample: bool, conv_clamp: float | None) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("blur_kernel", _blur_kernel_2d(gain=4.0), persistent=False)
        self._weight_cache: tuple | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B,in,R,R], w: [B,style_dim] -> [B,out,R',R']."""
        styles = self.affine(w)
        # Per-sample normalisation for fp16 safety; demodulation removes the scale again.
        styles = styles / styles.abs().amax(dim=1, keepdim=True).clamp_min(_FP16_FLOOR)
        weight, squared_weight = self._static_weights()
        # The leaky ReLU's gain is positively homogeneous, so it is folded in before it. The
        # official 1e-8 is kept for fp32; it is 0 in fp16, where the floor keeps rsqrt finite.
        demod = torch.rsqrt((styles.square() @ squared_weight.t() + 1e-8).clamp_min(_FP16_FLOOR)
                            ) * _LRELU_GAIN  # [B,out]

        x = x * styles[:, :, None, None]
        if self.upsample:
            x = F.conv_transpose2d(x, weight, stride=2)
            channels = x.shape[1]
            blur = self.blur_kernel.to(x.dtype)[None, None].expand(channels, 1, -1, -1)
            x = F.conv2d(x, blur, padding=1, groups=channels)
        else:
            x = F.conv2d(x, weight, padding=1)
        noise = (self.noise_strength * _LRELU_GAIN) * self.noise.to(x.dtype)  # [1,1,R,R]
        x = torch.addcmul(noise, x, demod[:, :, None, None])
        x = x + (self.bias * _LRELU_GAIN)[None, :, None, None]
        x = F.leaky_relu(x, _LRELU_SLOPE, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def _static_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scaled conv weight and its per-(out,in) sum of squares [out,in].

        The weight is [out,in,3,3], or [in,out,3,3] (contiguous) for the transposed convolution
        of an up-sampling layer.

        Both depend only on the parameters, so outside training and export they are cached
        (keyed on the parameter's version, dtype and device) instead of recomputed per frame.
        """
        if (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export()):
            return self._scaled_weights()  # traced graphs see plain weight arithmetic
        cacheable = not (
            (torch.is_grad_enabled() and self.weight.requires_grad)
            or self.weight.is_inference())  # built under inference_mode: no version counter
        key = (self.weight._version, self.weight.dtype, self.weight.device) if cacheable else None
        if cacheable and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1], self._weight_cache[2]
        with torch.inference_mode(False), torch.set_grad_enabled(not cacheable):
            weight, squared_weight = self._scaled_weights()
        if cacheable:
            self._weight_cache = (key, weight, squared_weight)
        return weight, squared_weight

    def _scaled_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.weight * self.weight_gain
        squared_weight = weight.square().sum(dim=(2, 3))
        if self.upsample:
            weight = weight.transpose(0, 1).contiguous()
        return weight, squared_weight


class ToRGB(nn.Module):
    """Modulated 1×1 convolution to RGB (no demodulation) plus the up-sampled previous RGB."""

    def __init__(self, in_channels: int, style_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.bias = nn.Parameter(torch.zeros(3))
        self.register_buffer("upsample_kernel", _blur_kernel_2d(gain=4.0), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                skip: torch.Tensor | None) -> torch.Tensor:
        """x: [B,in,R,R], w: [B,style_dim], skip: [B,3,R/2,R/2] or None -> [B,3,R,R]."""
        styles = self.affine(w) * self.weight_gain
        rgb = F.conv2d(x * styles[:, :, None, None], self.weight)
        rgb = rgb + self.bias[None, :, None, None]
        if self.conv_clamp is not None:
            rgb = rgb.clamp(-self.conv_clamp, self.conv_clamp)
        if skip is not None:
            rgb = rgb + self._upsample(skip)
        return rgb

    def _upsample(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B,3,R,R] -> [B,3,2R,2R]: zero insertion and the FIR filter (upfirdn2d, pad (2,1))."""
        weight = self.upsample_kernel.to(rgb.dtype)[None, None].expand(3, 1, -1, -1)
        return F.conv_transpose2d(rgb, weight, stride=2, padding=1, groups=3)


class SynthesisNetwork(nn.Module):
    """W+ [B,n_latent,style_dim] -> image [B,3,R,R] in about [-1,1]."""

    def __init__(self, resolution: int, style_dim: int, channel_multiplier: float,
                 channel_max: int, conv_clamp: float | None) -> None:
        super().__init__()
        log_size = int(math.log2(resolution))
        self.resolution = resolution
        self.num_layers = 2 * (log_size - 2) + 1
        self.n_latent = self.num_layers + 1

        def channels(res: int) -> int:
            return layer_channels(res, channel_multiplier, channel_max)

        self.const = nn.Parameter(torch.randn(1, channels(4), 4, 4))
        layers = [StyledConv(channels(4), channels(4), style_dim, 4, False, conv_clamp)]
        to_rgbs = [ToRGB(channels(4), style_dim, conv_clamp)]
        for log_res in range(3, log_size + 1):
            res = 2**log_res
            layers.append(StyledConv(channels(res // 2), channels(res), style_dim, res, True,
                                     conv_clamp))
            layers.append(StyledConv(channels(res), channels(res), style_dim, res, False,
                                     conv_clamp))
            to_rgbs.append(ToRGB(channels(res), style_dim, conv_clamp))
        self.layers = nn.ModuleList(layers)
        self.to_rgbs = nn.ModuleList(to_rgbs)

    def feature_shape(self, k: int) -> tuple[int, int, int]:
        """(C, R, R) of ``outs[k]`` (see the module docstring)."""
        self._check_k(k)
        if k == 0:
            return tuple(self.const.shape[1:])  # type: ignore[return-value]
        layer = self.layers[k - 1]
        return (layer.weight.shape[0], layer.noise.shape[-1], layer.noise.shape[-1])

    def features(self, ws: torch.Tensor, k: int) -> torch.Tensor:
        """The k-th feature tensor G(w^{1:k}).

        ws: [B,n_latent,512] (only ws[:, :k] is used) -> [B,C,R,R], ``feature_shape(k)``.
        """
        self._check_k(k)
        x = self.const.expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        for j in range(k):
            x = self.layers[j](x, ws[:, j])
        return x

    def edited_features(self, w: torch.Tensor, w_edit: torch.Tensor, features: torch.Tensor,
                        k: int) -> torch.Tensor:
        """Paper 003's Eq. 1, the one place it is written: F̃ = F + G(w̃^{1:k}) − G(w^{1:k}).

        w, w_edit: [B,n_latent,512]; features: [B,C,R,R], ``feature_shape(k)`` -> F̃ in the
        dtype of ``features``. One call on the batch [w̃; w], split by slicing (not ``chunk``,
        which would fix an exported graph's batch size).
        """
        batch = w.shape[0]
        moved_and_original = self.features(torch.cat([w_edit, w]), k)
        change = moved_and_original[:batch] - moved_and_original[batch:]
        if change.dtype != features.dtype:
            change = change.to(features.dtype)
        return features + change

    def forward(self, ws: torch.Tensor, features: torch.Tensor | None = None,
                k: int | None = None) -> torch.Tensor:
        """Render W+ codes, optionally starting from a feature tensor at layer ``k``.

        ws: [B,n_latent,512]; features: [B,C,R,R] = ``feature_shape(k)`` or None.
        Returns [B,3,resolution,resolution], about [-1,1].
        """
        if ws.ndim != 3 or ws.shape[1] != self.n_latent:
            raise ValueError(f"ws must be [B,{self.n_latent},512], got {tuple(ws.shape)}")
        if (features is None) != (k is None):
            raise ValueError("features and k must be given together")
        if k is not None:
            self._check_k(k)
        x = self.const.expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        rgb = None
        for j, layer in enumerate(self.layers):
            if j == k:
                x = features
            x = layer(x, ws[:, j])
            if j % 2 == 0:
                rgb = self.to_rgbs[j // 2](x, ws[:, j + 1], rgb)
        return rgb

    def _check_k(self, k: int) -> None:
        if not 0 <= k < self.num_layers:
            raise ValueError(f"feature index k must be in [0, {self.num_layers - 1}], got {k}")


class StyleGAN2Generator(nn.Module):
    """A StyleGAN2 generator: ``mapping`` (z -> w) and ``synthesis`` (W+ -> image).

    Constructor arguments are plain numbers so a checkpoint stores them as JSON. The average
    latent ``latent_avg`` [style_dim] is a buffer (the truncation centre and the encoder's base).
    """

    def __init__(self, resolution: int, style_dim: int = 512, n_mlp: int = 8,
                 channel_multiplier: float = 2, channel_max: int = 512,
                 conv_clamp: float | None = None, lr_mlp: float = 0.01) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {resolution}")
        self.config = {
            "resolution": int(resolution), "style_dim": int(style_dim), "n_mlp": int(n_mlp),
            "channel_multiplier": channel_multiplier, "channel_max": int(channel_max),
            "conv_clamp": conv_clamp, "lr_mlp": lr_mlp,
        }
        self.mapping = MappingNetwork(style_dim, n_mlp, lr_mlp)
        self.synthesis = SynthesisNetwork(resolution, style_dim, channel_multiplier, channel_max,
                                          conv_clamp)
        self.register_buffer("latent_avg", torch.zeros(style_dim))

    @property
    def resolution(self) -> int:
        return self.synthesis.resolution

    @property
    def n_latent(self) -> int:
        return self.synthesis.n_latent

    @property
    def num_layers(self) -> int:
        return self.synthesis.num_layers

    @property
    def style_dim(self) -> int:
        return self.config["style_dim"]

    def features(self, ws: torch.Tensor, k: int) -> torch.Tensor:
        """G(w^{1:k}): see :meth:`SynthesisNetwork.features`."""
        return self.synthesis.features(ws, k)

    def edited_features(self, w: torch.Tensor, w_edit: torch.Tensor, features: torch.Tensor,
                        k: int) -> torch.Tensor:
        """Eq. 1 of paper 003: see :meth:`SynthesisNetwork.edited_features`."""
        return self.synthesis.edited_features(w, w_edit, features, k)

    def forward(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """Sample: z [B,512] -> image [B,3,R,R] (the same w on every layer)."""
        w = self.mapping(z)
        if truncation != 1.0:
            w = self.latent_avg + truncation * (w - self.latent_avg)
        return self.synthesis(w[:, None].expand(-1, self.n_latent, -1))

    @torch.no_grad()
    def compute_latent_avg(self, n_samples: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of the mapping network's output over ``n_samples`` seeded z; [style_dim]."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n_samples, self.style_dim, generator=generator)
        device = self.latent_avg.device
        return self.mapping(z.to(device)).mean(dim=0)
