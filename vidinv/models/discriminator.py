"""StyleGAN2's residual discriminator, beside the generator it judges (used by the GAN training
in :mod:`vidinv.train.gan`).

The rosinality / NVIDIA layout: FromRGB, one residual block per octave with blur + stride-2
down-sampling, minibatch standard deviation, a 3×3 conv and two equalised-lr linear layers. The
blur is an autograd function whose backward is its own transpose, so the double backward of R1
regularisation stays two plain depthwise convolutions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidinv.models.stylegan2 import EqualLinear, layer_channels

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)


def _blur_kernel(channels: int) -> torch.Tensor:
    """[C,1,4,4] depthwise FIR filter outer([1,3,3,1]) / 64 (unit DC gain)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return (kernel / kernel.sum())[None, None].repeat(channels, 1, 1, 1)


class _Blur(torch.autograd.Function):
    """Depthwise convolution with a fixed kernel whose backward is its transpose, written as
    another autograd function (and so on), so double backward (R1) costs two plain depthwise
    convolutions. PyTorch's generic double backward of a grouped convolution also differentiates
    with respect to the kernel, one channel at a time, which makes R1 steps several times slower.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: torch.Tensor, padding: int,
                stride: int) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.padding, ctx.stride, ctx.size = padding, stride, tuple(x.shape[-2:])
        return F.conv2d(x, kernel, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (kernel,) = ctx.saved_tensors
        grad = _BlurTranspose.apply(grad, kernel, ctx.padding, ctx.stride, ctx.size)
        return grad, None, None, None


class _BlurTranspose(torch.autograd.Function):
    """The adjoint of :class:`_Blur`: [B,C,h,w] -> [B,C,*size]."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, kernel: torch.Tensor, padding: int, stride: int,
                size: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.padding, ctx.stride = padding, stride
        extra = [size[i] - ((grad.shape[2 + i] - 1) * stride - 2 * padding + kernel.shape[-1])
                 for i in range(2)]
        return F.conv_transpose2d(grad, kernel, stride=stride, padding=padding,
                                  output_padding=tuple(extra), groups=grad.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (kernel,) = ctx.saved_tensors
        return _Blur.apply(grad, kernel, ctx.padding, ctx.stride), None, None, None, None


def blur(x: torch.Tensor, kernel: torch.Tensor, padding: int, stride: int = 1) -> torch.Tensor:
    """Depthwise FIR filter ``kernel`` [C,1,k,k] with zero ``padding``, keeping every
    ``stride``-th output: [B,C,H,W] -> [B,C,(H+2p-k)//stride+1, …]. Differentiable any number of
    times with respect to x (not to the kernel)."""
    return _Blur.apply(x, kernel.to(x.dtype), padding, stride)


class DiscriminatorConv(nn.Module):
    """Equalised-lr convolution, optionally blur + stride-2 down-sampling, bias, leaky ReLU·√2.

    x: [B,in,R,R] -> [B,out,R,R] (or [B,out,R/2,R/2] with ``downsample``). A down-sampling
    3×3 convolution blurs at full resolution, then convolves with stride 2 (rosinality's
    padding); a down-sampling 1×1 convolution blurs with stride 2, then convolves.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 downsample: bool = False, bias: bool = True, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.activate = activate
        self.downsample = downsample
        self.kernel_size = kernel_size
        if downsample:
            # The blur's padding: (4 - 2 + k - 1) / 2 keeps the output at R/2.
            self.blur_padding = (4 - 2 + kernel_size - 1) // 2
            self.register_buffer("blur_kernel", _blur_kernel(in_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if not self.downsample:
            x = F.conv2d(x, weight, padding=self.kernel_size // 2)
        elif self.kernel_size == 1:
            x = F.conv2d(blur(x, self.blur_kernel, self.blur_padding, stride=2), weight)
        else:
            x = F.conv2d(blur(x, self.blur_kernel, self.blur_padding), weight, stride=2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        if self.activate:
            x = F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN
        return x


class DiscriminatorBlock(nn.Module):
    """Residual block: 3×3 conv, 3×3 blur-down conv, plus a 1×1 blur-down skip; scaled by 1/√2.

    x: [B,in,R,R] -> [B,out,R/2,R/2].
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = DiscriminatorConv(in_channels, in_channels, 3)
        self.conv2 = DiscriminatorConv(in_channels, out_channels, 3, downsample=True)
        self.skip = DiscriminatorConv(in_channels, out_channels, 1, downsample=True, bias=False,
                                      activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_features: int = 1
                     ) -> torch.Tensor:
    """Append the per-group standard deviation, averaged over C/F channels and pixels.

    x: [B,C,H,W] -> [B,C+F,H,W]. The group is the largest size ≤ ``group_size`` dividing B;
    sample b is grouped with b ± k·B/group (rosinality's and NVIDIA's layout).
    """
    batch, channels, height, width = x.shape
    group = min(group_size, batch)
    while batch % group:
        group -= 1
    y = x.reshape(group, -1, num_features, channels // num_features, height, width)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # [B/G,F,C/F,H,W]
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [B/G,F]
    y = y[:, :, None, None].repeat(group, 1, height, width)  # [B,F,H,W]
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: image [B,3,R,R] in [-1,1] -> logits [B,1].

    FromRGB (1×1), one :class:`DiscriminatorBlock` per octave down to 4×4, minibatch standard
    deviation, a 3×3 conv, then two equalised-lr linear layers. Channel counts follow the
    generator's table (:func:`layer_channels`), so the same ``channel_multiplier`` and
    ``channel_max`` size both networks.
    """

    def __init__(self, resolution: int, channel_multiplier: float = 2, channel_max: int = 512,
                 mbstd_group: int = 4, mbstd_features: int = 1) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {resolution}")
        self.config = {"resolution": int(resolution), "channel_multiplier": channel_multiplier,
                       "channel_max": int(channel_max), "mbstd_group": int(mbstd_group),
                       "mbstd_features": int(mbstd_features)}
        self.resolution = resolution
        self.mbstd_group = mbstd_group
        self.mbstd_features = mbstd_features

        def channels(res: int) -> int:
            return layer_channels(res, channel_multiplier, channel_max)

        self.from_rgb = DiscriminatorConv(3, channels(resolution), 1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(channels(res), channels(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        top = channels(4)
        self.final_conv = DiscriminatorConv(top + mbstd_features, top, 3)
        self.final_linear = EqualLinear(top * 16, top)
        self.out = EqualLinear(top, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [B,3,R,R] float in about [-1,1] -> [B,1] logits (real > 0)."""
        if image.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"expected [B,3,{self.resolution},{self.resolution}] images, got "
                             f"{tuple(image.shape)}")
        x = self.blocks(self.from_rgb(image))
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_features)
        x = self.final_conv(x)
        x = F.leaky_relu(self.final_linear(x.flatten(1)), _LRELU_SLOPE) * _LRELU_GAIN
        return self.out(x)
