"""vidinv.train.gan / augment / its CLI: StyleGAN2 training on tiny models and synthetic shapes.

D, minibatch standard deviation, DiffAugment, the EMA formula, lazy R1, checkpoints and exact
resume, Ctrl-C, the saved EMA generator, the image-folder loader and ``vidinv train generator``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal

import numpy as np
import pytest
import torch

from vidinv.cli.train_gan import add_gan_parser
from vidinv.errors import CheckpointError, InputFileError, VidinvError
from vidinv.models import load_generator
from vidinv.models.discriminator import Discriminator, _blur_kernel, blur, minibatch_stddev
from vidinv.models.folder import GENERATOR_FILE, TRAINING_STATE_FILE
from vidinv.train.augment import (
    DiffAugment,
    parse_policy,
    random_cutout,
    random_translation,
    translate,
)
from vidinv.train.gan import (
    LOG_FILE,
    REALS_FILE,
    SAMPLES_DIR,
    GanTrainConfig,
    GanTrainer,
    ema_beta,
    image_grid,
    load_image_folder,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine (two
    OpenMP threads on two shared cores spin against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_vidinv_logging():
    logger = logging.getLogger("vidinv")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def shapes(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """[n,3,size,size] uint8: coloured squares and discs on black."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = size // 5
    for i in range(n):
        cy, cx = torch.randint(radius, size - radius, (2,), generator=generator).tolist()
        colour = torch.randint(64, 256, (3,), generator=generator).to(torch.uint8)
        if i % 2:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            mask = ((yy - cy).abs() <= radius) & ((xx - cx).abs() <= radius)
        images[i][:, mask] = colour[:, None]
    return images


def tiny_config(**changes) -> GanTrainConfig:
    values = dict(resolution=16, channel_max=16, n_mlp=2, style_dim=32, batch=4, r1_every=4,
                  ema_kimg=0.05, n_samples=4, checkpoint_every=1000, sample_every=1000,
                  log_every=5)
    values.update(changes)
    return GanTrainConfig(**values)


# --- discriminator ---------------------------------------------------------------------------


def test_discriminator_gives_one_logit_per_image_and_gradients_reach_everything():
    torch.manual_seed(0)
    D = Discriminator(32, channel_multiplier=2, channel_max=16)
    images = torch.randn(6, 3, 32, 32, requires_grad=True)  # 6: stddev groups of 3
    logits = D(images)
    assert logits.shape == (6, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for name, param in D.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="32"):
        D(torch.randn(2, 3, 16, 16))


def test_discriminator_is_residual_with_one_block_per_octave():
    D = Discriminator(64, channel_multiplier=2, channel_max=32)
    assert len(D.blocks) == 4  # 64 → 32 → 16 → 8 → 4
    x = torch.randn(2, 32, 64, 64)
    assert D.blocks[0](x).shape == (2, 32, 32, 32)


@pytest.mark.parametrize(("padding", "stride", "size"), [(2, 1, 8), (1, 2, 8), (1, 2, 7)])
def test_blur_is_the_depthwise_fir_filter_and_twice_differentiable(padding, stride, size):
    kernel = _blur_kernel(3).double()
    x = torch.randn(2, 3, size, size, dtype=torch.double, requires_grad=True)
    expected = torch.nn.functional.conv2d(x, kernel, padding=padding, stride=stride, groups=3)
    assert torch.allclose(blur(x, kernel, padding, stride), expected)
    assert kernel[0, 0].sum() == pytest.approx(1.0)

    def function(t):
        return blur(t, kernel, padding, stride)

    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))  # R1 differentiates D's input gradient


def test_minibatch_stddev_groups_samples_b_and_b_plus_k_times_batch_over_group():
    x = torch.randn(8, 5, 4, 4)
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 6, 4, 4)
    assert torch.equal(out[:, :5], x)
    for b in range(8):
        group = x[b % 2::2]  # B/G = 2: samples with the same index mod 2
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(out[b, 5], expected.expand(4, 4), atol=1e-6)
    assert minibatch_stddev(torch.randn(3, 2, 4, 4)).shape == (3, 3, 4, 4)  # group 3


# --- DiffAugment -----------------------------------------------------------------------------


def test_diffaugment_keeps_shapes_is_differentiable_and_reproducible():
    augment = DiffAugment("color,translation,cutout")
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    first = augment(x, torch.Generator().manual_seed(3))
    again = augment(x, torch.Generator().manual_seed(3))
    other = augment(x, torch.Generator().manual_seed(4))
    assert first.shape == x.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    first.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_moves_content_by_whole_pixels_and_fills_zero():
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    moved = translate(x, torch.tensor([2, -1]), torch.tensor([-3, 1]))
    assert moved[0, 0, 5, 1] == 1 and moved[1, 0, 2, 5] == 1 and moved.sum() == 2
    ramp = torch.arange(64.0).reshape(1, 1, 8, 8)
    shifted = translate(ramp, torch.tensor([1]), torch.tensor([0]))
    assert torch.equal(shifted[0, 0, 1:], ramp[0, 0, :-1]) and shifted[0, 0, 0].abs().sum() == 0

    rng = torch.Generator().manual_seed(0)
    dots = torch.zeros(64, 1, 16, 16)
    dots[:, 0, 8, 8] = 1.0
    out = random_translation(dots, rng)  # ratio 1/8: at most 2 px each way
    where = out[:, 0].flatten(1).argmax(dim=1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert out.sum() == 64 and dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert (dy != 0).any() and (dx != 0).any()


def test_cutout_zeroes_at_most_half_by_half_and_colour_jitters_per_sample():
    rng = torch.Generator().manual_seed(1)
    out = random_cutout(torch.ones(32, 3, 16, 16), rng)
    zeros = (out[:, 0] == 0).flatten(1).sum(dim=1)
    assert zeros.max() == 64 and zeros.min() > 0  # 8×8, clipped at the border
    assert torch.equal(out[:, 0], out[:, 2])  # one window for all channels
    coloured = DiffAugment("color")(torch.zeros(8, 3, 4, 4), rng)
    assert len(set(coloured.mean(dim=(1, 2, 3)).tolist())) == 8


def test_policy_strings():
    assert parse_policy("color, cutout") == ("color", "cutout")
    assert parse_policy("") == () and parse_policy("none") == ()
    assert not DiffAugment("none")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(DiffAugment("")(x, torch.Generator()), x)
    with pytest.raises(ValueError, match="rotate"):
        parse_policy("color,rotate")


# --- the trainer -----------------------------------------------------------------------------


def test_ema_beta_is_nvidias_formula():
    assert ema_beta(0, 8, 10.0, 0.05) == 0.0  # G_ema starts as G
    assert ema_beta(800, 8, 10.0, 0.05) == pytest.approx(0.5 ** (8 / 40))
    assert ema_beta(10**7, 8, 10.0, 0.05) == pytest.approx(0.5 ** (8 / 10_000))
    assert ema_beta(0, 8, 10.0, None) == pytest.approx(0.5 ** (8 / 10_000))


def test_training_runs_with_finite_losses_and_d_learns_the_data():
    trainer = GanTrainer(tiny_config(), shapes())
    initial_ema = [param.clone() for param in trainer.G_ema.parameters()]
    reals = trainer.images.float() / 127.5 - 1.0
    with torch.no_grad():
        initial_fakes = trainer.sample(torch.randn(8, 32, generator=torch.Generator()))
    records = trainer.train(30)
    assert [record["step"] for record in records] == list(range(1, 31))
    for record in records:
        for key in ("d_loss", "d_real", "d_fake", "g_loss", "r1"):
            assert math.isfinite(record[key]), (key, record)
    # D now scores the training shapes above what the untrained generator drew (a margin seen
    # for every seed from 0 to 9 is ≥ 0.33; before training it is about ±0.5 either way).
    with torch.no_grad():
        margin = trainer.D(reals).mean() - trainer.D(initial_fakes).mean()
    assert margin > 0.2
    for before, after in zip(initial_ema, trainer.G_ema.parameters(), strict=True):
        assert not torch.equal(before, after)  # every parameter of G_ema moved
    images = trainer.sample()
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


def test_g_ema_follows_the_formula_and_keeps_its_noise_buffers():
    trainer = GanTrainer(tiny_config(), shapes())
    trainer.train(3)
    ema_before = [p.clone() for p in trainer.G_ema.parameters()]
    noise_before = [layer.noise.clone() for layer in trainer.G_ema.synthesis.layers]
    g_noise = [layer.noise.clone() for layer in trainer.G.synthesis.layers]
    beta = ema_beta(3 * 4, 4, 0.05, 0.05)
    record = trainer.train(1)[0]
    assert record["ema_beta"] == pytest.approx(beta) and 0 < beta < 1
    for ema, old, param in zip(trainer.G_ema.parameters(), ema_before, trainer.G.parameters(),
                               strict=True):
        assert torch.allclose(ema, beta * old + (1 - beta) * param, atol=1e-6)
    for layer, noise in zip(trainer.G_ema.synthesis.layers, noise_before, strict=True):
        assert torch.equal(layer.noise, noise)
    for layer, noise in zip(trainer.G.synthesis.layers, g_noise, strict=True):
        assert torch.equal(layer.noise, noise)  # random noise is swapped in, then put back


def test_lazy_r1_runs_every_r1_every_steps():
    trainer = GanTrainer(tiny_config(r1_every=3), shapes())
    calls = []
    trainer.D.register_forward_hook(lambda module, args, out: calls.append(1))
    with_r1 = []
    for _ in range(7):
        before = len(calls)
        step = trainer.step
        trainer.training_step()
        if len(calls) - before == 4:  # fakes, reals, G step, and the R1 pass
            with_r1.append(step)
        else:
            assert len(calls) - before == 3
    assert with_r1 == [0, 3, 6]
    # The D optimiser's lr and betas are scaled by r1_every / (r1_every + 1), G's are not.
    ratio = 3 / 4
    assert trainer.d_optim.param_groups[0]["lr"] == pytest.approx(0.002 * ratio)
    assert trainer.d_optim.param_groups[0]["betas"][1] == pytest.approx(0.99**ratio)
    assert trainer.g_optim.param_groups[0]["lr"] == pytest.approx(0.002)


def test_r1_off_and_path_length_on():
    trainer = GanTrainer(tiny_config(r1_gamma=0.0, pl_weight=2.0, pl_every=2), shapes())
    records = trainer.train(3)
    assert all(math.isnan(record["r1"]) for record in records)
    assert all(math.isfinite(record["pl"]) for record in records)
    assert trainer.pl_mean > 0
    assert trainer.g_optim.param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)


def test_checkpoint_and_resume_give_the_same_next_steps(tmp_path):
    config = tiny_config(r1_every=2)
    uninterrupted = GanTrainer(config, shapes())
    uninterrupted.train(3)
    expected = uninterrupted.train(2)

    first = GanTrainer(config, shapes(), out_dir=tmp_path)
    first.train(3)
    assert (tmp_path / TRAINING_STATE_FILE).is_file() and (tmp_path / GENERATOR_FILE).is_file()
    resumed = GanTrainer.from_checkpoint(tmp_path, shapes())
    assert resumed.step == 3 and resumed.out_dir == tmp_path
    got = resumed.train(2)
    keys = ("d_loss", "d_real", "d_fake", "real_logit", "fake_logit", "g_loss", "r1")
    for want, have in zip(expected, got, strict=True):
        assert {key: want[key] for key in keys} == {key: have[key] for key in keys}
    for a, b in zip(uninterrupted.G_ema.parameters(), resumed.G_ema.parameters(), strict=True):
        assert torch.equal(a, b)

    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 5]  # each train() logs its end
    assert {"d_loss", "g_loss", "r1", "images_per_s", "kimg"} <= set(json.loads(lines[0]))
    assert (tmp_path / REALS_FILE).is_file() and (tmp_path / SAMPLES_DIR / "000000.png").is_file()


def test_resume_refuses_another_architecture(tmp_path):
    GanTrainer(tiny_config(), shapes(), out_dir=tmp_path).train(1)
    other = GanTrainer(tiny_config(channel_max=8), shapes())
    with pytest.raises(CheckpointError, match="channel_max"):
        other.resume(tmp_path)


def test_saved_ema_generator_loads_and_renders(tmp_path):
    trainer = GanTrainer(tiny_config(), shapes(), out_dir=tmp_path)
    trainer.train(2)
    generator = load_generator(tmp_path / GENERATOR_FILE)
    assert generator.resolution == 16 and generator.style_dim == 32
    assert torch.allclose(generator.latent_avg, generator.compute_latent_avg())
    for saved, live in zip(generator.parameters(), trainer.G_ema.parameters(), strict=True):
        assert torch.equal(saved, live)
    with torch.no_grad():
        images = generator(torch.randn(2, 32), truncation=0.7)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_ctrl_c_finishes_the_step_saves_and_stops(tmp_path):
    trainer = GanTrainer(tiny_config(), shapes(), out_dir=tmp_path)
    step = trainer.training_step

    def interrupting_step():
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return step()

    trainer.training_step = interrupting_step
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(10)
    assert trainer.step == 2
    assert GanTrainer.from_checkpoint(tmp_path, shapes()).step == 2
    assert signal.getsignal(signal.SIGINT) is handler


def test_trainer_checks_its_images():
    with pytest.raises(ValueError, match="uint8"):
        GanTrainer(tiny_config(), shapes().float())
    with pytest.raises(ValueError, match=r"\[N,3,16,16\]"):
        GanTrainer(tiny_config(), shapes(size=32))


# --- data and grids --------------------------------------------------------------------------


def _write_pngs(folder, images):
    from vidinv.video.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        write_image(folder / f"face{i}.png", image.permute(1, 2, 0).numpy())


def test_load_image_folder_resizes_square_crops(tmp_path):
    images = shapes(n=3, size=32)
    _write_pngs(tmp_path / "faces", images)
    loaded = load_image_folder(tmp_path / "faces", 16)
    assert loaded.shape == (3, 3, 16, 16) and loaded.dtype == torch.uint8
    # Area averaging: each output pixel is the mean of a 2×2 block.
    expected = images.float().reshape(3, 3, 16, 2, 16, 2).mean(dim=(3, 5))
    assert (loaded.float() - expected).abs().max() <= 1
    assert torch.equal(load_image_folder(tmp_path / "faces", 32), images)

    from vidinv.video.images import write_image

    write_image(tmp_path / "faces" / "wide.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(InputFileError, match="not square"):
        load_image_folder(tmp_path / "faces", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no images"):
        load_image_folder(tmp_path / "empty", 16)
    with pytest.raises(InputFileError, match="not a folder"):
        load_image_folder(tmp_path / "missing", 16)


def test_image_grid_tiles_row_major():
    images = torch.zeros(3, 3, 2, 2, dtype=torch.uint8)
    images[1] = 100
    images[2] = 200
    grid = image_grid(images)
    assert grid.shape == (4, 4, 3)
    assert grid[0, 2, 0] == 100 and grid[2, 0, 0] == 200 and grid[2, 2, 0] == 0


# --- the command -----------------------------------------------------------------------------


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    train = commands.add_parser("train").add_subparsers(dest="train_command")
    add_gan_parser(train)
    args = parser.parse_args(["train", *argv])
    return args.handler(args)


def test_cli_trains_resumes_and_refuses_mistakes(tmp_path):
    _write_pngs(tmp_path / "faces", shapes(n=4, size=32))
    out = tmp_path / "run"
    common = ["generator", "--data", str(tmp_path / "faces"), "--out", str(out),
              "--threads", "1", "--no-progress"]
    tiny = ["--resolution", "16", "--channel-max", "16", "--n-mlp", "2", "--style-dim", "32",
            "--batch", "2", "--r1-every", "2", "--checkpoint-every", "2", "--sample-every", "1"]
    assert _run_cli([*common, *tiny, "--steps", "2"]) == 0
    generator = load_generator(out / GENERATOR_FILE)
    assert generator.resolution == 16 and generator.style_dim == 32
    assert (out / SAMPLES_DIR / "000002.png").is_file()

    with pytest.raises(VidinvError, match="--resume"):
        _run_cli([*common, *tiny, "--steps", "3"])
    with pytest.raises(VidinvError, match="channel-max"):
        _run_cli([*common, "--resume", "--channel-max", "8", "--steps", "3"])
    assert _run_cli([*common, "--resume", "--steps", "3", "--lr", "0.001"]) == 0
    resumed = GanTrainer.from_checkpoint(out, tmp_path / "faces")
    assert resumed.step == 3 and resumed.config.lr == 0.001 and resumed.config.batch == 2
    with pytest.raises(VidinvError, match="no training state"):
        _run_cli(["generator", "--data", str(tmp_path / "faces"), "--out",
                  str(tmp_path / "nothing"), "--resume"])


def test_set_lr_changes_both_optimisers_with_the_lazy_regularisation_ratio():
    from vidinv.train.gan import GanTrainConfig, GanTrainer

    trainer = GanTrainer(GanTrainConfig(resolution=16, channel_max=16, batch=2, r1_every=16),
                         torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    trainer.set_lr(5e-4)
    assert trainer.config.lr == 5e-4
    assert [g["lr"] for g in trainer.g_optim.param_groups] == [5e-4]  # no path-length reg.
    assert [g["lr"] for g in trainer.d_optim.param_groups] == [pytest.approx(5e-4 * 16 / 17)]
