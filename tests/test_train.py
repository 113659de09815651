"""vidinv.train: losses, encoder training (ramp, checkpoints, resume, Ctrl-C), cycle encoding,
pivot refinement, PTI, Z+ and the `vidinv train` commands — on tiny random models."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidinv.cli import main
from vidinv.errors import CheckpointError, InputFileError
from vidinv.models import (
    FeatureStyleEncoder,
    StyleGAN2Generator,
    load_encoder,
    load_generator,
    save_generator,
)
from vidinv.models.encoder import check_encoder_matches
from vidinv.models.folder import ENCODER_FILE, TRAINING_STATE_FILE
from vidinv.train.cycle import CycleConfig, CycleSchedule, mask_deltas
from vidinv.train.encoder import (
    LOG_FILE,
    EncoderTrainer,
    EncoderTrainingConfig,
    TensorImageSource,
    feature_scale,
)
from vidinv.train.losses import (
    LPIPS,
    IdentityLoss,
    LossWeights,
    MultiScale,
    MultiScaleStructureLoss,
    StructureLoss,
    build_perceptual,
    downscale,
    feature_reconstruction,
    load_identity_network,
    mse,
)
from vidinv.train.pti import PTIConfig, locality_codes, save_tuned_generator, tune_generator
from vidinv.train.refine import RefineConfig, code_distance, refine_pivot
from vidinv.train.zplus import invert_zplus, project_to_sphere, walk_on_sphere, zplus_to_wplus

K = 1  # a 32 px encoder with content stride 1 predicts the 4×4 feature: outs[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is faster, and far faster on a busy machine
    (two OpenMP threads on two shared cores spin against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_vidinv_logging():
    """``main`` attaches a handler to the captured stderr of the test that calls it; drop it
    afterwards so later tests do not log into a closed stream."""
    logger = logging.getLogger("vidinv")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


@pytest.fixture(scope="module")
def G() -> StyleGAN2Generator:
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16)
    generator.latent_avg.copy_(generator.compute_latent_avg(256))
    return generator.eval().requires_grad_(False)


def _encoder(G: StyleGAN2Generator, seed: int = 0) -> FeatureStyleEncoder:
    torch.manual_seed(seed)
    encoder = FeatureStyleEncoder(n_latent=G.n_latent, input_size=32, widths=(8, 8, 16, 16),
                                  blocks=(1, 1, 1, 1), feature_channels=16, content_stride=1)
    check_encoder_matches(encoder, G, K)
    return encoder


def _config(**changes) -> EncoderTrainingConfig:
    base = EncoderTrainingConfig(batch_size=2, lr=1e-3, feature_index=K, feature_ramp_rate=0.05,
                                 truncation=0.5, log_every=1000)
    return dataclasses.replace(base, **changes)


def _images(G: StyleGAN2Generator, n: int, seed: int, psi: float = 0.5) -> torch.Tensor:
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.latent_avg + psi * (G.mapping(z) - G.latent_avg)
        return G.synthesis(w[:, None].expand(-1, G.n_latent, -1))


def _w(G: StyleGAN2Generator, n: int, seed: int, psi: float = 0.5) -> torch.Tensor:
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.latent_avg + psi * (G.mapping(z) - G.latent_avg)
    return w[:, None].expand(-1, G.n_latent, -1).contiguous()


class TinyNet(nn.Module):
    """A stand-in for ArcFace / a face parser: two conv layers, both outputs returned."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = torch.relu(self.a(x))
        return [h1, self.b(h1)]


def _random_lpips_files(tmp_path) -> tuple[str, str]:
    """A torchvision-layout vgg16 state dict (with classifier keys) and LPIPS-style heads."""
    torch.manual_seed(1)
    vgg = {}
    in_c = 3
    index = 0
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M"):
        if item == "M":
            index += 1
            continue
        vgg[f"features.{index}.weight"] = torch.randn(item, in_c, 3, 3) / math.sqrt(in_c * 9)
        vgg[f"features.{index}.bias"] = torch.zeros(item)
        in_c = item
        index += 2
    vgg["classifier.0.weight"] = torch.zeros(4, 4)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
           for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "lin.pth")
    return str(tmp_path / "vgg16.pth"), str(tmp_path / "lin.pth")


# --- losses ----------------------------------------------------------------------------------


def test_loss_weights_are_the_papers():
    weights = LossWeights()
    assert (weights.mse, weights.perceptual, weights.identity,
            weights.f_recon) == (1.0, 0.2, 0.1, 0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        weights.mse = 2.0  # type: ignore[misc]


def test_each_image_loss_is_zero_on_equal_images_and_decreases(tmp_path):
    vgg, lin = _random_lpips_files(tmp_path)
    losses = {
        "mse": mse,
        "ms_structure": MultiScaleStructureLoss(),
        "ms_lpips": MultiScale(LPIPS.from_files(vgg, lin)),
        "identity": IdentityLoss(TinyNet(), input_size=16),
    }
    for name, loss in losses.items():
        # VGG16 is the slow one on a CPU: LPIPS runs on one 16 px image (its smallest side).
        shape = (1, 3, 16, 16) if name == "ms_lpips" else (2, 3, 32, 32)
        target = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        assert getattr(loss, "name", "mse") == name  # logged under an honest name
        assert float(loss(target, target).abs().max()) < 1e-5, name
        image = torch.zeros_like(target).requires_grad_(True)
        optimizer = torch.optim.Adam([image], lr=0.05)
        values = []
        for _ in range(30):
            value = loss(image, target).mean()
            values.append(float(value.detach()))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        assert values[-1] < 0.5 * values[0], (name, values[0], values[-1])


def test_multi_scale_sums_the_downscales():
    x, y = torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    single = StructureLoss()
    expected = sum(single(downscale(x, i), downscale(y, i)) for i in range(3))
    assert torch.allclose(MultiScaleStructureLoss()(x, y), expected)
    # Scales below the loss's minimum side are skipped: 8 px is too small for LPIPS.
    assert MultiScale(single, 5)(x, y).shape == (2,)


def test_lpips_loader_errors_clearly_without_weights(tmp_path, capsys):
    vgg, lin = _random_lpips_files(tmp_path)
    with pytest.raises(InputFileError, match="--lpips-vgg"):
        LPIPS.from_files(None, lin)
    with pytest.raises(InputFileError, match="--lpips-lin"):
        build_perceptual(vgg, None)
    with pytest.raises(InputFileError, match="missing.pth: no such file; pass --lpips-vgg"):
        LPIPS.from_files(tmp_path / "missing.pth", lin)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="lack '1.weight'"):
        LPIPS.from_files(vgg, tmp_path / "short.pth")
    # Without any weights the substitute is used, under its own name.
    assert build_perceptual().name == "ms_structure"
    assert build_perceptual(vgg, lin).name == "ms_lpips"
    assert main(["train", "encoder", "--generator", "g", "--out", str(tmp_path / "run"),
                 "--lpips-vgg", vgg]) == 2
    assert "pass --lpips-lin PATH" in capsys.readouterr().err


# --- encoder training ------------------------------------------------------------------------


def test_feature_scale_ramp(G):
    assert [feature_scale(s, 1e-4) for s in (0, 1, 5000, 10_000, 20_000)] == [
        0.0, 1e-4, 0.5, 1.0, 1.0]
    trainer = EncoderTrainer(G, _encoder(G), _config(feature_ramp_rate=0.1))
    w = _w(G, 2, seed=3)
    features = torch.randn(2, *G.synthesis.feature_shape(K))
    x1, x2, g_features = trainer.render(w, features, step=0)
    assert torch.allclose(x1, G.synthesis(w)) and torch.allclose(x2, x1, atol=1e-6)
    assert torch.equal(g_features, G.features(w, K))
    _, x2, _ = trainer.render(w, features, step=5)  # s = 0.5
    blended = 0.5 * G.features(w, K) + 0.5 * features
    assert torch.allclose(x2, G.synthesis(w, features=blended, k=K), atol=1e-6)
    _, x2, _ = trainer.render(w, features, step=50)  # s = 1: the encoder's F alone
    assert torch.allclose(x2, G.synthesis(w, features=features, k=K), atol=1e-6)


def test_encoder_training_lowers_the_losses(G):
    real = TensorImageSource(_images(G, 4, seed=11), size=32)
    trainer = EncoderTrainer(G, _encoder(G), _config(batch_size=2), real_images=real)
    assert trainer.encoder.latent_avg.equal(G.latent_avg.expand(G.n_latent, -1))
    records = trainer.train(40)
    assert len(records) == 40 and records[-1]["step"] == 40

    def mean(key: str, part: slice) -> float:
        return float(np.mean([r[key] for r in records[part]]))

    for key in ("total", "mse", "ms_structure"):
        assert mean(key, slice(-8, None)) < 0.9 * mean(key, slice(0, 8)), key
    print("encoder training:", {k: (round(mean(k, slice(0, 8)), 3),
                                    round(mean(k, slice(-8, None)), 3))
                                for k in ("total", "mse", "ms_structure", "f_recon")})
    # Identity is off unless a network is given.
    assert "identity" not in records[0]


def test_feature_reconstruction_term_pulls_f_to_the_generator_features(G):
    weights = LossWeights(mse=0.0, perceptual=0.0, f_recon=1.0)
    trainer = EncoderTrainer(G, _encoder(G), _config(weights=weights, lr=3e-3))
    records = trainer.train(20)
    first, last = records[0]["f_recon"], float(np.mean([r["f_recon"] for r in records[-4:]]))
    print(f"feature reconstruction alone: {first:.4f} -> {last:.4f}")
    assert last < 0.5 * first


class EmbedNet(nn.Module):
    """A stand-in face-embedding network: image [B,3,S,S] -> a fixed linear embedding [B,16]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.project = nn.Linear(3 * size * size, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x.flatten(1))


class ConstantNet(nn.Module):
    """An embedding network that ignores its input: the identity term must then be 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 16, dtype=x.dtype)


def _script(net: nn.Module, path: Path, size: int = 16) -> str:
    """``net`` as the user brings it: a torch.export program with a dynamic batch."""
    program = torch.export.export(net.eval(), (torch.zeros(2, 3, size, size),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return str(path)


def test_identity_loss_is_zero_for_one_face_and_grows_with_the_embedding_angle(tmp_path):
    loss = load_identity_network(_script(EmbedNet(16), tmp_path / "id.pt2"), input_size=16)
    seed = torch.Generator().manual_seed(0)
    face = torch.rand(2, 3, 16, 16, generator=seed) * 2 - 1
    away = torch.rand(2, 3, 16, 16, generator=seed) * 2 - 1
    assert torch.allclose(loss(face, face), torch.zeros(2), atol=1e-6)
    # Moving along a line away from the face: the embedding angle, and so 1 − cos, grows.
    values = [loss(face + t * (away - face), face) for t in (0.1, 0.3, 0.6, 1.0)]
    for smaller, larger in itertools.pairwise(values):
        assert (larger > smaller).all()
    expected = 1 - torch.nn.functional.cosine_similarity(
        loss.network(face + away), loss.network(face), dim=1)
    assert torch.allclose(loss(face + away, face), expected, atol=1e-6)


def test_identity_net_errors_are_one_line(tmp_path):
    not_torchscript = tmp_path / "net.pt2"
    not_torchscript.write_bytes(b"not a network")
    with pytest.raises(CheckpointError, match="not a torch.export network"):
        load_identity_network(not_torchscript)
    with pytest.raises(InputFileError, match="no such file"):
        load_identity_network(tmp_path / "missing.pt2")
    wrong_size = _script(EmbedNet(16), tmp_path / "id16.pt2")
    with pytest.raises(CheckpointError, match="--identity-size"):
        load_identity_network(wrong_size, input_size=32)


def test_cli_train_encoder_identity_net_drives_the_identity_term(generator_file, tmp_path,
                                                                 capsys):
    def run(name: str, *extra: str) -> list[dict]:
        out = tmp_path / name
        assert main(["train", "encoder", "--generator", generator_file, "--out", str(out),
                     *_TINY_ENCODER, "--steps", "2", "--log-every", "1", *extra]) == 0
        return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]

    embed = _script(EmbedNet(16), tmp_path / "embed.pt2")
    with_net = run("embed", "--identity-net", embed, "--identity-size", "16",
                   "--identity-weight", "0.5")
    assert all(record["identity"] > 0 for record in with_net)
    # The term is the network's: one that sees no difference between faces gives exactly 0.
    constant = _script(ConstantNet(), tmp_path / "constant.pt2")
    assert all(record["identity"] == 0 for record in run(
        "constant", "--identity-net", constant, "--identity-size", "16"))
    assert all("identity" not in record for record in run("none"))
    # A weight without a network is a one-line error.
    assert main(["train", "encoder", "--generator", generator_file, "--out",
                 str(tmp_path / "bad"), *_TINY_ENCODER, "--identity-weight", "1"]) == 2
    assert "--identity-net" in capsys.readouterr().err


def test_checkpoint_resume_continues_exactly(G, tmp_path):
    out = tmp_path / "run"
    config = _config(checkpoint_every=2, log_every=1)
    trainer = EncoderTrainer(G, _encoder(G), config, out_dir=out)
    trainer.train(2)
    saved_optimizer = {key: value.clone() for key, value in
                       trainer.optimizer.state_dict()["state"][0].items()}
    later = trainer.train(2)  # steps 3 and 4 without interruption (checkpoint at 4)
    expected_params = [p.detach().clone() for p in trainer.encoder.parameters()]

    # A checkpoint at step 2 (written again so that the folder holds step 2).
    first = EncoderTrainer(G, _encoder(G), config, out_dir=tmp_path / "again")
    first.train(2)
    resumed = EncoderTrainer.resume(G, tmp_path / "again")
    assert resumed.step == 2
    state = resumed.optimizer.state_dict()["state"][0]
    assert all(torch.equal(state[key], value) for key, value in saved_optimizer.items())
    assert resumed.optimizer.state_dict()["param_groups"] == \
        first.optimizer.state_dict()["param_groups"]
    again = resumed.train(2)
    assert [r["total"] for r in again] == [r["total"] for r in later]
    assert all(torch.equal(a, b) for a, b in zip(resumed.encoder.parameters(),
                                                   expected_params, strict=True))
    lines = (out / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    encoder = load_encoder(out / ENCODER_FILE)
    x = _images(G, 2, seed=4)
    trainer.encoder.eval()
    assert torch.allclose(encoder(x)[0], trainer.encoder(x)[0])


def test_ctrl_c_saves_a_checkpoint_and_stops(G, tmp_path):
    class InterruptingSource(TensorImageSource):
        calls = 0

        def sample(self, n, generator):
            self.calls += 1
            if self.calls == 2:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the second step
            return super().sample(n, generator)

    real = InterruptingSource(_images(G, 2, seed=1), size=32)
    trainer = EncoderTrainer(G, _encoder(G), _config(checkpoint_every=100), real_images=real,
                             out_dir=tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(10)
    assert trainer.step == 2  # the interrupted step was completed, then the loop stopped
    assert EncoderTrainer.resume(G, tmp_path, real_images=real).step == 2
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back


# --- cycle encoding --------------------------------------------------------------------------


def test_cycle_schedule_paper_numbers():
    paper = CycleSchedule.paper(18)
    assert [paper.enable_step(i) for i in (1, 2, 17)] == [20_000, 22_000, 52_000]
    assert paper.removal_step(17) == 650_000 and paper.end == 714_000
    assert paper.state(713_999).active[:3] == (True, True, False)
    assert paper.state(714_000).active == (True,) + (False,) * 17
    assert paper.state(640_000).delta_norm_weight == pytest.approx(2e-4 * 1.2 ** 15)
    assert paper.state(700_000).delta_norm_weight == pytest.approx(2e-4 * 1.2 ** 15)


@pytest.mark.parametrize(("step", "active", "delta_weight", "disc_weight", "phase"), [
    (0, 0, 2e-4, 0.1, "w_to_wplus"),
    (1, 0, 2e-4, 0.1, "w_to_wplus"),
    (2, 1, 2e-4, 0.1, "w_to_wplus"),       # delta 1 enabled at progressive_start
    (3, 2, 2e-4, 0.1, "w_to_wplus"),
    (8, 7, 2e-4, 0.1, "w_to_wplus"),       # all 7 deltas: full W+
    (49, 7, 2e-4, 0.1, "w_to_wplus"),
    (50, 7, 2e-4 * 1.2, 0.05, "wplus_to_w"),
    (51, 7, 2e-4 * 1.2 ** 2, 0.025, "wplus_to_w"),
    (64, 7, 2e-4 * 1.2 ** 15, 0.1 * 0.5 ** 15, "wplus_to_w"),
    (65, 6, 2e-4 * 1.2 ** 15, 0.1 * 0.5 ** 16, "removal"),   # delta 7 removed first
    (70, 1, 2e-4 * 1.2 ** 15, 0.1 * 0.5 ** 21, "removal"),
    (71, 0, 2e-4 * 1.2 ** 15, 0.1 * 0.5 ** 22, "pure_w"),
    (200, 0, 2e-4 * 1.2 ** 15, 0.1 * 0.5 ** 151, "pure_w"),
])
def test_cycle_schedule_boundaries(step, active, delta_weight, disc_weight, phase):
    schedule = CycleSchedule.paper(n_latent=8, scale=1e-4)
    assert (schedule.progressive_start, schedule.progressive_every, schedule.wplus_to_w_start,
            schedule.grow_every, schedule.removal_start, schedule.remove_every,
            schedule.end) == (2, 1, 50, 1, 65, 1, 71)
    state = schedule.state(step)
    # The active deltas are always the lowest layers: enabled bottom-up, removed top-down.
    assert state.active == (True,) + (True,) * active + (False,) * (7 - active)
    assert state.delta_norm_weight == pytest.approx(delta_weight)
    assert state.disc_weight == pytest.approx(disc_weight)
    assert state.phase == phase
    mask, delta, disc, name = state  # also unpacks as a tuple
    assert (mask, delta, disc, name) == (state.active, state.delta_norm_weight,
                                         state.disc_weight, state.phase)


def test_cycle_training_ends_in_pure_w(G, tmp_path):
    schedule = CycleSchedule(n_latent=G.n_latent, progressive_start=1, progressive_every=1,
                             wplus_to_w_start=9, grow_every=2, removal_start=12, remove_every=1)
    assert schedule.end == 18
    config = _config(cycle=CycleConfig(schedule=schedule, r1_every=4), checkpoint_every=100)
    trainer = EncoderTrainer(G, _encoder(G), config, out_dir=tmp_path)
    records = trainer.train(schedule.end + 1)
    assert [r["active_deltas"] for r in records] == (
        [0] + list(range(1, 8)) + [7] * 4 + list(range(6, -1, -1)))
    assert all("delta_norm" in r for r in records if r["active_deltas"])
    assert all("adversarial" in r and "disc" in r for r in records)
    assert "r1" in records[0] and "r1" in records[4] and "r1" not in records[1]
    x = _images(G, 3, seed=9)
    encoder = load_encoder(tmp_path / ENCODER_FILE)  # the saved encoder: identical rows
    w, _ = encoder(x)
    assert torch.allclose(w, w[:, :1].expand_as(w))
    trainer.encoder.eval()
    with torch.no_grad():
        w_raw, _ = trainer.encoder(x)
    masked = mask_deltas(w_raw, torch.tensor(trainer.cycle_state().active))
    assert torch.allclose(masked, w, atol=1e-6)
    assert not torch.allclose(w_raw, w_raw[:, :1].expand_as(w_raw))  # the raw rows differ


# --- refinement, PTI, Z+ ---------------------------------------------------------------------


def test_refinement_lowers_the_error_within_its_radius(G):
    target = _images(G, 1, seed=21)
    w_init = _w(G, 1, seed=22)
    radius = 3.0
    result = refine_pivot(G, target, w_init, config=RefineConfig(steps=40, lr=0.02,
                                                                 radius=radius, space="w+"))
    before, after = result.history[0]["mse"], result.history[-1]["mse"]
    assert after < 0.9 * before, (before, after)
    assert float(code_distance(result.w, w_init).max()) <= radius + 1e-4
    assert result.history[-1]["distance"] == pytest.approx(radius, rel=1e-3)  # it pushed out
    print(f"refinement: mse {before:.4f} -> {after:.4f}")
    # A W pivot (equal rows) stays in W; features can be refined too.
    result = refine_pivot(G, target, w_init, features_init=G.features(w_init, K),
                          config=RefineConfig(steps=10, optimise_features=True, feature_index=K))
    assert torch.equal(result.w, result.w[:, :1].expand_as(result.w))
    assert result.features is not None and result.history[-1]["mse"] < result.history[0]["mse"]


def test_pti_fits_the_pivot_and_the_locality_regulariser_holds_the_rest(G, tmp_path):
    w_pivot = _w(G, 1, seed=31)
    target = _images(G, 1, seed=32)
    far = locality_codes(G, w_pivot, 4, alpha=30.0, psi=0.5, rng=torch.Generator().manual_seed(7))
    with torch.no_grad():
        far_before = G.synthesis(far)
    drift = {}
    for locality in (False, True):
        config = PTIConfig(steps=25, lr=3e-3, stop_threshold=None, locality=locality,
                           locality_samples=2, locality_mse_weight=1.0,
                           locality_perceptual_weight=1.0)
        result = tune_generator(G, w_pivot, target, config)
        assert result.history[-1]["mse"] < 0.5 * result.history[0]["mse"]
        with torch.no_grad():
            drift[locality] = float(mse(result.generator.synthesis(far), far_before).mean())
        print(f"PTI (locality {locality}): mse {result.history[0]['mse']:.4f} -> "
              f"{result.history[-1]['mse']:.4f}, drift at distant codes {drift[locality]:.4f}")
    assert drift[True] < 0.7 * drift[False]
    with torch.no_grad():
        assert torch.equal(G.synthesis(far), far_before)  # the original is untouched
    path = save_tuned_generator(result, tmp_path / "tuned.safetensors")
    assert torch.equal(load_generator(path).synthesis(w_pivot),
                       result.generator.synthesis(w_pivot))
    # Early stop at the threshold.
    stopped = tune_generator(G, w_pivot, target, PTIConfig(steps=50, stop_threshold=1e9))
    assert stopped.stopped_early and len(stopped.history) == 1


def test_zplus_inversion_stays_on_the_sphere(G):
    target = _images(G, 1, seed=41)
    result = invert_zplus(G, target, steps=40, lr=0.05, feature_index=3, perceptual_weight=1.0)
    assert result.history[-1]["loss"] < 0.8 * result.history[0]["loss"]
    assert torch.allclose(result.z.norm(dim=-1), torch.full((1, G.n_latent), math.sqrt(512)),
                          rtol=1e-5)
    assert result.features.shape == (1, *G.synthesis.feature_shape(3))
    print(f"Z+: loss {result.history[0]['loss']:.4f} -> {result.history[-1]['loss']:.4f}")
    # Truncation acts on the first layers only.
    z = project_to_sphere(torch.randn(1, G.n_latent, 512))
    w = zplus_to_wplus(G, z, truncation=0.7, truncation_layers=3)
    mapped = G.mapping(z[0])
    assert torch.allclose(w[0, 3:], mapped[3:])
    assert torch.allclose(w[0, :3], G.latent_avg + 0.7 * (mapped[:3] - G.latent_avg), atol=1e-6)


def test_walk_on_sphere_keeps_norms_and_moves_along_the_direction():
    z = project_to_sphere(torch.randn(8, 512, generator=torch.Generator().manual_seed(0)))
    direction = torch.randn(512, generator=torch.Generator().manual_seed(1))
    direction = direction / direction.norm()
    path = walk_on_sphere(z, direction, steps=10, step_size=2.0, return_path=True)
    assert path.shape == (11, 8, 512) and torch.equal(path[0], z)
    assert torch.allclose(path.norm(dim=-1), torch.full((11, 8), math.sqrt(512)), rtol=1e-5)
    along = (path @ direction)  # [11, 8]: the projection on the direction grows at every step
    assert bool((along[1:] > along[:-1]).all())
    assert torch.equal(walk_on_sphere(z, direction, steps=0, step_size=1.0), z)


def test_feature_reconstruction_is_a_mean_squared_error():
    a, b = torch.randn(2, 2, 16, 4, 4)
    assert torch.allclose(feature_reconstruction(a, b), ((a - b) ** 2).mean(dim=(1, 2, 3)))


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator_file(G, tmp_path_factory):
    return str(save_generator(G, tmp_path_factory.mktemp("g") / "g.safetensors"))


_TINY_ENCODER = ["--k", str(K), "--input-size", "32", "--widths", "8", "8", "16", "16",
                 "--blocks", "1", "1", "1", "1", "--batch", "2", "--device", "cpu"]


def test_cli_train_encoder_writes_a_loadable_encoder(G, generator_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "encoder", "--generator", generator_file, "--out", str(out), *_TINY_ENCODER]
    assert main([*args, "--steps", "3", "--log-every", "1"]) == 0
    encoder = load_encoder(out / ENCODER_FILE)
    check_encoder_matches(encoder, G, K)
    assert len((out / LOG_FILE).read_text().splitlines()) == 3
    assert (out / TRAINING_STATE_FILE).is_file()
    # A second fresh run into the same folder is refused; --resume continues to --steps.
    assert main([*args, "--steps", "5"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--steps", "5", "--resume"]) == 0
    assert "step 5" in capsys.readouterr().out


def test_cli_refine_and_pti(G, generator_file, tmp_path, capsys):
    from vidinv.models.encoder_io import save_encoder
    from vidinv.video.images import write_image

    encoder = _encoder(G)
    encoder.set_latent_avg(G.latent_avg)
    encoder_path = save_encoder(encoder.eval(), tmp_path / "e.safetensors")
    image = ((_images(G, 1, seed=51)[0].clamp(-1, 1) + 1) * 127.5).round().byte()
    write_image(tmp_path / "face.png", image.permute(1, 2, 0).numpy())
    common = ["--generator", generator_file, "--encoder", str(encoder_path), "--image",
              str(tmp_path / "face.png"), "--k", str(K), "--device", "cpu"]
    pivot = tmp_path / "pivot.npz"
    assert main(["train", "refine", *common, "--out", str(pivot), "--steps", "5"]) == 0
    with np.load(pivot) as data:
        assert data["w"].shape == (G.n_latent, 512) and len(data["history_mse"]) == 6
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", "pti", *common, "--pivot", str(pivot), "--out", str(tuned),
                 "--steps", "3", "--stop-at", "0"]) == 0
    assert load_generator(tuned).n_latent == G.n_latent
    assert (tmp_path / "tuned.pivot.npz").is_file()
    assert main(["train", "pti", *common, "--out", str(tuned), "--steps", "1"]) == 2
    assert "--force" in capsys.readouterr().err
