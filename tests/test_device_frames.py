"""Frames that stay on the device: the rendered faces quantised where they are and copied once
through pinned memory, the latent smoothing on the codes' device; the CPU path unchanged.

The CUDA calls run against tests/fake_tensorrt.py's torch.cuda fake (CPU tensors stand in for
device memory); what a GPU alone can show (the copy overlapping, the speed) is
benchmarks/gpu_check.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import fake_tensorrt
from vidinv.frame import Frame
from vidinv.stages import model as model_stages
from vidinv.stages.latent import SmoothLatents
from vidinv.stages.model import device_images_to_host, quantised, tensor_to_images


def _renders(batch: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    images[0, 0, 0, :4] = torch.tensor([-1.5, 1.5, (0.5 / 127.5) - 1, (2.5 / 127.5) - 1])
    return images  # out of range, and values on .5 (rounded half to even)


def test_the_cpu_path_is_bit_identical_to_the_old_conversion() -> None:
    images = _renders()
    before = images.clone()
    old = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    new = tensor_to_images(images)
    assert all(np.array_equal(a, b) for a, b in zip(new, old.numpy(), strict=True))
    assert all(image.flags.c_contiguous and image.dtype == np.uint8 for image in new)
    assert torch.equal(images, before)  # the caller's tensor is not written


class _RecordingHost(torch.Tensor):
    copies: list[bool] = []

    def copy_(self, src: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
        _RecordingHost.copies.append(non_blocking)
        return super().copy_(src, non_blocking=non_blocking)


def test_device_renders_are_quantised_there_and_copied_through_pinned_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = fake_tensorrt.FakeCuda().install(monkeypatch)
    asked: list[tuple[int, ...]] = []

    def pinned(shape: tuple[int, ...]) -> torch.Tensor:
        asked.append(shape)
        cuda.calls.append(("pinned", shape))
        return torch.empty(shape, dtype=torch.uint8).as_subclass(_RecordingHost)

    monkeypatch.setattr(model_stages, "pinned_host_buffer", pinned)
    _RecordingHost.copies = []
    edited, reconstruction = _renders(seed=1), _renders(seed=2)
    got = device_images_to_host(edited, reconstruction)
    for host, images in zip(got, (edited, reconstruction), strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(host, tensor_to_images(images),
                                                           strict=True))
    assert asked == [(3, 16, 16, 3)] * 2 and _RecordingHost.copies == [True, True]
    # both copies queued before the one event, which the host waits for before reading
    names = [call[0] for call in cuda.calls]
    assert names == ["pinned", "pinned", "event_record", "event_synchronize"]


def test_quantised_is_the_one_arithmetic_of_both_paths() -> None:
    images = _renders()
    pixels = quantised(images)
    assert pixels.shape == (3, 16, 16, 3) and pixels.dtype == torch.uint8
    assert pixels.is_contiguous()
    assert np.array_equal(np.stack(tensor_to_images(images)), pixels.numpy())


def _clip(count: int = 12, gap: int = 5) -> list[Frame]:
    generator = torch.Generator().manual_seed(0)
    frames = []
    for index in range(count):
        frame = Frame(index=index, image=np.zeros((2, 2, 3), np.uint8))
        if index != gap:
            frame.w = torch.randn(6, 8, generator=generator)
            frame.features = torch.randn(4, 2, 2, generator=generator)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("mode", ["causal", "centred"])
def test_smoothing_on_the_device_matches_the_host_path(mode: str) -> None:
    host = list(SmoothLatents(mode, sigma=1.2, fine_layers_from=4)(iter(_clip())))
    device = list(SmoothLatents(mode, sigma=1.2, fine_layers_from=4, on_device=True)(
        iter(_clip())))
    assert [f.index for f in device] == list(range(12))
    for a, b in zip(host, device, strict=True):
        if a.w is None:
            assert b.w is None
            continue
        assert b.w.dtype == torch.float32 and b.features.shape == (4, 2, 2)
        assert torch.allclose(a.w, b.w, atol=1e-5) and torch.allclose(a.features, b.features,
                                                                       atol=1e-5)
    raw = _clip()
    assert not torch.allclose(device[3].w, raw[3].w)  # it did smooth


def test_codes_on_cuda_take_the_device_path_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host path would call .cpu().numpy(); on CUDA codes the stage must not."""
    stage = SmoothLatents("centred")

    class _OnCuda:
        type = "cuda"

    frame = _clip(1)[0]
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: _OnCuda()))
    assert stage._device_path(frame)
    monkeypatch.undo()
    assert not stage._device_path(frame)


def test_the_cuda_module_is_an_nhwc_copy_and_the_callers_stays_as_it_was() -> None:
    """What TorchEngine does on CUDA (cudnn.benchmark aside), shown on the CPU: a channels_last
    copy of the module computes the same, and the caller's module keeps its layout."""
    from torch import nn

    from vidinv.engines.torch_engine import TorchEngine

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2),
                           nn.Conv2d(8, 3, 3, padding=1)).eval()
    same = TorchEngine._prepared(module, torch.device("cpu"), torch.float32)
    nhwc = TorchEngine._prepared(module, torch.device("cpu"), torch.float32, channels_last=True)
    assert same is module and nhwc is not module
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert module[0].weight.is_contiguous()  # untouched
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(nhwc(x.contiguous(memory_format=torch.channels_last)), module(x),
                              atol=1e-5)
    assert TorchEngine._prepared(nhwc, torch.device("cpu"), torch.float32,
                                 channels_last=True) is nhwc  # already NHWC: no second copy
