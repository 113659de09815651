"""Generator throughput per backend against this machine's own convolution throughput.

    python benchmarks/generator.py [--resolution 256] [--batch 1] [--repeats 5] [--no-compile]
    python benchmarks/generator.py --model path/to/generator.safetensors

Prints GFLOP per image, ms per image for torch eager, torch.compile (if it works here) and ONNX
Runtime, and each as a fraction of the fp32 throughput of a 512-channel 3×3 convolution measured
in the same run (the best of 32×32 and 64×64 inputs, batch 1). Default config: the FFHQ-256
config-f architecture (channel multiplier 2, 8 mapping layers) with random weights.

torch.compile runs twice: as is, and with inductor's ``freezing`` (weights become constants, so
the weight arithmetic folds away and oneDNN gets prepacked weights and its own layout: the
configuration PyTorch recommends for CPU inference; 385 → 350 ms an image here).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from vidinv.models.generator_io import load_generator
from vidinv.models.stylegan2 import StyleGAN2Generator
from vidinv.models.summary import count_synthesis_flops


def best_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_conv_peak(repeats: int) -> tuple[float, str]:
    """Best fp32 GFLOP/s of a 512→512 3×3 convolution (batch 1) at 32 and 64 px."""
    best, where = 0.0, ""
    with torch.inference_mode():
        weight = torch.randn(512, 512, 3, 3)
        for size in (32, 64):
            x = torch.randn(1, 512, size, size)
            seconds = best_seconds(lambda x=x: F.conv2d(x, weight, padding=1), repeats + 2)
            rate = 2 * 9 * 512 * 512 * size * size / seconds / 1e9
            if rate > best:
                best, where = rate, f"512→512 3×3 conv on 1×512×{size}×{size}"
    return best, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a generator checkpoint instead of random weights")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--channel-multiplier", type=float, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.model:
        generator = load_generator(args.model)
        label = args.model
    else:
        generator = StyleGAN2Generator(args.resolution,
                                       channel_multiplier=args.channel_multiplier)
        generator.eval().requires_grad_(False)
        label = (f"StyleGAN2 config-f {args.resolution} px, channel multiplier "
                 f"{args.channel_multiplier:g}, random weights")
    gflop = count_synthesis_flops(generator.config) / 1e9
    ws = torch.randn(args.batch, generator.n_latent, generator.style_dim)

    print(f"model     {label}")
    print(f"machine   {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"work      {gflop:.2f} GFLOP per image (synthesis, convs + matmuls), "
          f"batch {args.batch}")
    first_peak, where = measure_conv_peak(args.repeats)
    results: list[tuple[str, float | None, str]] = []  # (backend, seconds per batch, note)

    def report(name: str, seconds: float | None, note: str = "") -> None:
        results.append((name, seconds, note))

    with torch.inference_mode():
        report("torch eager", best_seconds(lambda: generator.synthesis(ws), args.repeats))
        channels_last = generator.to(memory_format=torch.channels_last)
        report("torch eager channels_last",
               best_seconds(lambda: channels_last.synthesis(ws), args.repeats))
        generator.to(memory_format=torch.contiguous_format)
    for name, memory_format in (("torch traced", torch.contiguous_format),
                                ("torch traced channels_last (CPU engine)",
                                 torch.channels_last)):
        # a frozen TorchScript trace; vidinv's torch engine runs the channels_last one on the CPU
        generator.to(memory_format=memory_format)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(generator.synthesis, ws,
                                                      check_trace=False).eval())
        with torch.inference_mode():
            report(name, best_seconds(lambda traced=traced: traced(ws), args.repeats))
    generator.to(memory_format=torch.contiguous_format)

    if args.no_compile:
        report("torch.compile", None, "skipped (--no-compile)")
    else:
        import torch._inductor.config as inductor_config

        for name, freezing in (("torch.compile (inductor)", False),
                               ("torch.compile (inductor, frozen)", True)):
            torch._dynamo.reset()
            try:
                with inductor_config.patch(freezing=freezing):
                    compiled = torch.compile(generator.synthesis)
                    start = time.perf_counter()
                    with torch.inference_mode():
                        compiled(ws)
                        compile_seconds = time.perf_counter() - start
                        seconds = best_seconds(lambda compiled=compiled: compiled(ws),
                                               args.repeats)
                report(name, seconds, f"compiled in {compile_seconds:.0f} s")
            except Exception as error:  # report, do not hide: the other backends still count
                report(name, None, f"failed: {type(error).__name__}: "
                       f"{str(error).splitlines()[0][:80] if str(error) else ''}")

    if args.no_onnx:
        report("onnxruntime", None, "skipped (--no-onnx)")
    else:
        from vidinv.engines.generator_export import export_generator
        from vidinv.engines.ort_engine import OrtEngine

        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            paths = export_generator(generator, Path(folder))
            export_seconds = time.perf_counter() - start
            engine = OrtEngine(paths["synthesis"])
            seconds = best_seconds(lambda: engine(ws=ws), args.repeats)
            with torch.inference_mode():
                error = (engine(ws=ws)["image"] - generator.synthesis(ws)).abs().max().item()
        report("onnxruntime (CPU)", seconds,
               f"exported in {export_seconds:.0f} s, max-abs vs torch {error:.1e}")

    last_peak, _ = measure_conv_peak(args.repeats)
    peak = max(first_peak, last_peak)  # the conservative choice: the larger peak
    print(f"peak      {peak:.1f} GFLOP/s fp32 ({where}; measured {first_peak:.1f} before and "
          f"{last_peak:.1f} after the backends: a gap means other load on the machine)")
    print()
    print(f"{'backend':<40}{'ms/image':>10}{'GFLOP/s':>10}{'of peak':>9}")
    rates = []
    for name, seconds, note in results:
        if seconds is None:
            print(f"{name:<40}{'—':>10}{'—':>10}{'—':>9}  {note}")
            continue
        per_image = seconds / args.batch
        rate = gflop / per_image
        rates.append((name, rate))
        print(f"{name:<40}{per_image * 1e3:>10.1f}{rate:>10.1f}{rate / peak:>9.0%}  {note}")
    if rates:
        name, rate = max(rates, key=lambda item: item[1])
        print()
        print(f"best      {name}: {rate / peak:.0%} of the measured conv peak (target ≥ 75%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
