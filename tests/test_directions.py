"""Direction files (native and foreign), generator fingerprints, model folders, and the
``vidinv directions`` commands."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from tests.skips import require
from vidinv.cli import main
from vidinv.latent.directions import (
    FSE_BOUNDARY_SCALE,
    Direction,
    DirectionSet,
    direction_files,
    generator_fingerprint,
    list_directions,
    load_direction,
    load_directions,
    save_directions,
)
from vidinv.latent.editing import LatentEditor, apply_direction
from vidinv.latent.errors import (
    DirectionError,
    GeneratorMismatchError,
    UnverifiedDirectionWarning,
)
from vidinv.models.generator_io import load_generator, save_generator
from vidinv.models.stylegan2 import StyleGAN2Generator


def _generator(seed: int) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    return StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def generator() -> StyleGAN2Generator:
    return _generator(0)


@pytest.fixture(scope="module")
def other_generator() -> StyleGAN2Generator:
    return _generator(1)


# --- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_identifies_the_weights(generator, other_generator, tmp_path):
    fingerprint = generator_fingerprint(generator)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert generator_fingerprint(generator) == fingerprint
    assert generator_fingerprint(other_generator) != fingerprint
    # the same weights through a file, in half precision, or with other noise: the same
    save_generator(generator, tmp_path / "g.safetensors")
    reloaded = load_generator(tmp_path / "g.safetensors")
    assert generator_fingerprint(reloaded) == fingerprint
    reloaded.synthesis.layers[0].noise.normal_()
    assert generator_fingerprint(reloaded) == fingerprint
    assert generator_fingerprint(_generator(0).half()) == fingerprint
    # any weight that changes changes it
    with torch.no_grad():
        reloaded.synthesis.to_rgbs[-1].affine.bias[0] += 0.01
    assert generator_fingerprint(reloaded) != fingerprint


def test_a_direction_for_another_generator_is_an_error(generator, other_generator, tmp_path):
    direction = Direction("smile", torch.randn(512), kind="interfacegan",
                          generator_fingerprint=generator_fingerprint(generator))
    direction.check_generator(generator)  # fine
    path = save_directions(tmp_path / "smile.safetensors", direction)
    expected = (f"'smile' was made for generator {generator_fingerprint(generator)}, not for "
                f"this generator {generator_fingerprint(other_generator)}")
    for attempt in (lambda: direction.check_generator(other_generator),
                    lambda: load_direction(path, generator=other_generator),
                    lambda: LatentEditor(other_generator, direction),
                    lambda: DirectionSet([direction]).check_generator(other_generator)):
        with pytest.raises(GeneratorMismatchError) as error:
            attempt()
        assert expected in str(error.value) and "\n" not in str(error.value)
    assert load_direction(path, generator=generator).name == "smile"


def test_a_foreign_direction_warns_once(generator, tmp_path):
    np.save(tmp_path / "age.npy", np.ones((1, 512)) / np.sqrt(512))
    direction = load_direction(tmp_path / "age.npy")
    assert direction.generator_fingerprint is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            LatentEditor(generator, direction)
    messages = [w for w in caught if issubclass(w.category, UnverifiedDirectionWarning)]
    assert len(messages) == 1 and "'age'" in str(messages[0].message)


# --- native files --------------------------------------------------------------------------------


def test_native_round_trip(tmp_path):
    one = Direction("smile", torch.randn(1, 8, 512), kind="interfacegan", layers=(0, 5),
                    strength_range=(-2, 4), scale=1.5, generator_fingerprint="0123456789abcdef",
                    meta={"accuracy": 0.93, "n_samples": 100, "attribute": "smile"})
    two = Direction("pc0", torch.randn(512), kind="ganspace", scale=2.5)
    path = save_directions(tmp_path / "dirs.safetensors",
                           DirectionSet([one, two], mean=torch.randn(512)))
    loaded = load_directions(path)
    assert loaded.names == ["smile", "pc0"] and loaded.source == path
    assert loaded.mean is not None and loaded.mean.shape == (512,)
    got = loaded["smile"]
    assert got.vector.shape == (8, 512) and torch.equal(got.vector, one.vector)
    assert (got.kind, got.layers, got.strength_range, got.scale) == \
        ("interfacegan", (0, 5), (-2.0, 4.0), 1.5)
    assert got.generator_fingerprint == "0123456789abcdef" and got.meta == one.meta
    assert load_direction(path, "pc0").scale == 2.5
    with pytest.raises(DirectionError, match="holds 2 directions; pick one by name"):
        load_direction(path)
    with pytest.raises(DirectionError, match="no direction 'age'.*smile, pc0"):
        load_direction(path, "age")
    # a generator file is not a direction file
    save_generator(_generator(0), tmp_path / "g.safetensors")
    with pytest.raises(DirectionError, match="a native generator file, not directions"):
        load_directions(tmp_path / "g.safetensors")


# --- foreign files -------------------------------------------------------------------------------


def test_interfacegan_npy(tmp_path):
    boundary = np.random.default_rng(0).normal(size=(1, 512))
    boundary /= np.linalg.norm(boundary)
    np.save(tmp_path / "Smiling_boundary.npy", boundary)  # float64, as InterFaceGAN writes
    direction = load_direction(tmp_path / "Smiling_boundary.npy")
    assert direction.name == "Smiling" and direction.kind == "interfacegan"
    assert direction.vector.dtype == torch.float32 and direction.vector.shape == (512,)
    assert direction.scale == 1.0 and direction.layers is None
    np.testing.assert_allclose(direction.vector.numpy(), boundary[0], rtol=1e-6)

    # the Feature-Style Encoder's flattened (1, N·512) boundaries, applied as w + 15·α·b
    flat = np.random.default_rng(1).normal(size=(1, 8 * 512))
    np.save(tmp_path / "fse.npy", flat)
    fse = load_direction(tmp_path / "fse.npy")
    assert fse.vector.shape == (8, 512) and fse.scale == FSE_BOUNDARY_SCALE == 15.0
    w = torch.randn(2, 8, 512)
    torch.testing.assert_close(
        apply_direction(w, fse, 0.5),
        w + 15 * 0.5 * torch.from_numpy(flat.reshape(8, 512)).float(), rtol=0, atol=1e-5)
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    with pytest.raises(DirectionError, match=r"shape \(3, 7\)"):
        load_directions(tmp_path / "bad.npy")


def test_e4e_pt(tmp_path):
    age = torch.randn(1, 512)
    torch.save(age, tmp_path / "age.pt")
    pose = torch.randn(512).expand(1, 8, 512).clone()  # e4e's pose.pt: one vector ×18
    torch.save(pose, tmp_path / "pose.pt")
    loaded_age = load_direction(tmp_path / "age.pt")
    assert loaded_age.kind == "e4e" and loaded_age.vector.shape == (512,)
    assert torch.equal(loaded_age.vector, age[0])
    loaded_pose = load_direction(tmp_path / "pose.pt")
    assert loaded_pose.vector.shape == (8, 512) and torch.equal(loaded_pose.vector, pose[0])
    torch.save(torch.randn(3, 3), tmp_path / "odd.pt")
    with pytest.raises(DirectionError, match=r"tensor of shape \(3, 3\)"):
        load_directions(tmp_path / "odd.pt")


def test_ganspace_pt_and_npz(tmp_path):
    rng = np.random.default_rng(2)
    comp = np.linalg.qr(rng.normal(size=(512, 80)))[0].T.reshape(80, 1, 512).astype(np.float32)
    std = np.linspace(3, 1, 80).astype(np.float32)
    mean = rng.normal(size=(1, 512)).astype(np.float32)
    torch.save({"mean": torch.from_numpy(mean), "comp": torch.from_numpy(comp),
                "std": torch.from_numpy(std)}, tmp_path / "ffhq_pca.pt")
    np.savez(tmp_path / "stylegan2-ffhq_w_ipca_c80.npz", lat_comp=comp, lat_mean=mean,
             lat_stdev=std, var_ratio=np.linspace(0.1, 0.001, 80).astype(np.float32),
             act_comp=comp, act_mean=mean, act_stdev=std)
    for name in ("ffhq_pca.pt", "stylegan2-ffhq_w_ipca_c80.npz"):
        pcs = load_directions(tmp_path / name)
        assert len(pcs) == 80 and pcs.names[:3] == ["pc0", "pc1", "pc2"]
        assert torch.equal(pcs.mean, torch.from_numpy(mean[0]))
        assert torch.equal(pcs["pc7"].vector, torch.from_numpy(comp[7, 0]))
        assert pcs["pc7"].scale == pytest.approx(float(std[7]))
        assert pcs[7].kind == "ganspace" and pcs[7].generator_fingerprint is None
    assert pcs[1].meta["explained_variance_ratio"] == pytest.approx(0.1 - 0.099 / 79)
    # an edit (component, first, last, strength)
    edit = pcs["pc3"].with_layers(2, 4)
    w = torch.zeros(1, 8, 512)
    moved = apply_direction(w, edit, 2.0)
    assert moved[:, [0, 1, 5, 6, 7]].abs().sum() == 0
    torch.testing.assert_close(moved[0, 3], torch.from_numpy(2.0 * std[3] * comp[3, 0]))

    torch.save({"mean": torch.zeros(1, 512), "comp": torch.zeros(2, 1, 512),
                "std": torch.ones(2), "extra": 1}, tmp_path / "extra.pt")
    with pytest.raises(DirectionError, match="unknown key 'extra'"):
        load_directions(tmp_path / "extra.pt")
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(DirectionError, match="not a GANSpace file"):
        load_directions(tmp_path / "other.npz")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DirectionError, match="not a readable tensor file"):
        load_directions(tmp_path / "junk.pt")


# --- model folders -------------------------------------------------------------------------------


def _model_folder(tmp_path, generator):
    folder = tmp_path / "model"
    save_generator(generator, folder / "generator.safetensors")
    folder.joinpath("directions").mkdir()
    fingerprint = generator_fingerprint(generator)
    save_directions(folder / "directions" / "smile.safetensors",
                    Direction("smile", torch.randn(512), generator_fingerprint=fingerprint))
    np.save(folder / "directions" / "age.npy", np.ones((1, 512)))
    torch.save(torch.randn(1, 512), folder / "directions" / "pose.pt")
    (folder / "directions" / "notes.txt").write_text("not a direction")
    return folder


def test_list_directions_of_a_model(generator, tmp_path):
    folder = _model_folder(tmp_path, generator)
    expected = ["age.npy", "pose.pt", "smile.safetensors"]
    for where in (folder, folder / "generator.safetensors", folder / "directions"):
        assert [p.name for p in direction_files(where)] == expected
        sets = list_directions(where)
        assert sorted(d.name for s in sets for d in s) == ["age", "pose", "smile"]
    assert direction_files(folder / "directions" / "age.npy") == [folder / "directions/age.npy"]
    # a folder of directions next to other files: the generator is not listed
    save_directions(folder / "extra.safetensors", Direction("x", torch.randn(512)))
    (folder / "directions").rename(folder / "elsewhere")
    assert [p.name for p in direction_files(folder)] == ["extra.safetensors"]
    assert direction_files(folder / "generator.safetensors") == []


# --- the commands --------------------------------------------------------------------------------


def test_cli_fit_sefa_then_show_and_list(generator, tmp_path, capsys):
    folder = _model_folder(tmp_path, generator)
    model = folder / "generator.safetensors"
    out = folder / "directions" / "sefa.safetensors"
    assert main(["directions", "fit", "--model", str(model), "--attr", "sefa",
                 "--components", "3", "--layers", "0-3", "-o", str(out)]) == 0
    fingerprint = generator_fingerprint(generator)
    assert f"3 sefa direction(s) for generator {fingerprint}" in capsys.readouterr().out
    directions = load_directions(out)
    assert directions.names == ["sefa0", "sefa1", "sefa2"]
    assert directions[0].layers == (0, 3) and directions[0].generator_fingerprint == fingerprint

    assert main(["directions", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "3 direction(s)" in shown
    assert re.search(rf"sefa0\s+sefa\s+\[512\]\s+layers 0-3 .*generator {fingerprint}", shown)

    assert main(["directions", "list", str(model)]) == 0
    listed = capsys.readouterr().out
    assert f"generator {fingerprint}" in listed
    assert re.search(r"sefa2 .*matches", listed) and re.search(r"age .*unverified", listed)

    # an existing output is kept without --force
    assert main(["directions", "fit", "--model", str(model), "--attr", "sefa",
                 "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_cli_fit_ganspace_and_show_one(generator, tmp_path, capsys):
    model = tmp_path / "g.safetensors"
    save_generator(generator, model)
    out = tmp_path / "pca.safetensors"
    assert main(["directions", "fit", "--model", str(model), "--attr", "ganspace",
                 "--samples", "300", "--components", "4", "-o", str(out)]) == 0
    pcs = load_directions(out)
    assert len(pcs) == 4 and pcs.mean is not None
    save_directions(tmp_path / "one.safetensors", Direction(
        "smile", torch.randn(512), kind="interfacegan", generator_fingerprint="ab" * 8,
        meta={"accuracy": 0.875, "n_samples": 2000}))
    capsys.readouterr()
    assert main(["directions", "show", str(tmp_path / "one.safetensors")]) == 0
    shown = capsys.readouterr().out
    assert "accuracy 0.875" in shown and "accuracy: 0.875" in shown
    assert "strength range -3 .. 3" in shown and f"generator {'ab' * 8}" in shown


def test_cli_errors(generator, tmp_path, capsys):
    model = tmp_path / "g.safetensors"
    save_generator(generator, model)
    assert main(["directions", "fit", "--model", str(model), "--attr", "beard",
                 "-o", str(tmp_path / "x.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("vidinv: error: unknown attribute 'beard'; known: smile, mouth_open, "
                     "eyes_open, yaw, sefa, ganspace")
    assert main(["directions", "show", str(tmp_path / "missing.safetensors")]) == 2
    assert main(["directions", "fit", "--model", str(model), "--attr", "sefa",
                 "--layers", "5-2", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "FIRST-LAST" in capsys.readouterr().err
    # a landmark attribute on an untrained generator: no faces to score
    require("mediapipe")
    assert main(["directions", "fit", "--model", str(model), "--attr", "smile", "--samples",
                 "16", "--quiet", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "got a smile score (no face found?)" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_attributes_match_the_scorers():
    from vidinv.cli.directions import LANDMARK_ATTRIBUTES
    from vidinv.latent.scorers import ATTRIBUTE_SCORERS

    assert tuple(ATTRIBUTE_SCORERS) == LANDMARK_ATTRIBUTES
