"""`vidinv models assemble`: the official formats in, one checked model folder out.

Fixtures are tiny files in the official formats (a rosinality ``.pt``, an NVIDIA pickle, a
``143_enc.pth``-style encoder state dict, e4e direction tensors); the FFHQ-1024 fit check runs
on the meta device with the official shapes (no memory, no weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fse_reference import meta_state, random_encoder_state, write_official_file
from tests.nvidia_fixture import write_nvidia_pickle
from tests.rosinality_reference import random_rosinality_state
from vidinv.errors import VidinvError
from vidinv.latent.assemble import ModelMismatchError, assemble_model, shape_problems
from vidinv.latent.directions import generator_fingerprint, load_directions
from vidinv.models.encoder import FeatureStyleEncoder
from vidinv.models.encoder_io import encoder_from_official_state, save_encoder
from vidinv.models.folder import load_model_bundle
from vidinv.models.generator_io import load_generator, save_generator
from vidinv.models.stylegan2 import StyleGAN2Generator

RESOLUTION = 32
N_LATENT = 8  # 2·log2(32) − 2
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 16}


def _official_encoder_file(path: Path, n_latent: int = N_LATENT, input_size: int = 256,
                           seed: int = 0) -> Path:
    """A ``143_enc.pth``-style plain state dict (official key names, no latent_avg)."""
    encoder = FeatureStyleEncoder(n_latent=n_latent, input_size=input_size,
                                  widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1),
                                  feature_channels=16, content_stride=2)
    shapes = [(key, tuple(value.shape)) for key, value in encoder.state_dict().items()
              if key != "latent_avg"]
    return write_official_file(path, random_encoder_state(shapes, seed))


def _native_128_px_encoder(path: Path, latent_avg: torch.Tensor) -> Path:
    """A native encoder for 128 px crops with content stride 2: an 8×8 feature tensor.
    (An official file cannot be told apart by input size: its weights do not record it.)"""
    encoder = FeatureStyleEncoder(n_latent=N_LATENT, input_size=128, widths=(8, 8, 16, 16),
                                  blocks=(1, 1, 1, 1), feature_channels=16, content_stride=2)
    encoder.set_latent_avg(latent_avg)
    return save_encoder(encoder, path)


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pieces")
    state = random_rosinality_state(RESOLUTION, n_mlp=2, channels=CHANNELS)
    latent_avg = torch.randn(512, generator=torch.Generator().manual_seed(7))
    torch.save({"g_ema": state, "latent_avg": latent_avg}, folder / "ffhq.pt")
    write_nvidia_pickle(folder / "ffhq.pkl", state, latent_avg, {
        "z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 16 * RESOLUTION, "channel_max": 16,
                             "num_fp16_res": 0, "conv_clamp": None},
        "c_dim": 0, "img_resolution": RESOLUTION, "img_channels": 3})
    seed = torch.Generator().manual_seed(3)
    torch.save(torch.randn(1, 512, generator=seed), folder / "e4e-interfacegan-smile.pt")
    torch.save(torch.randn(1, 512, generator=seed), folder / "age.pt")
    torch.save(torch.randn(1, 18, 512, generator=seed), folder / "pose.pt")  # 1024 px W+
    return {
        "pt": folder / "ffhq.pt",
        "pkl": folder / "ffhq.pkl",
        "encoder": _official_encoder_file(folder / "143_enc.pth"),
        "encoder_1024": _official_encoder_file(folder / "enc_18.pth", n_latent=18),
        "encoder_128": _native_128_px_encoder(folder / "enc_128.safetensors", latent_avg),
        "smile": folder / "e4e-interfacegan-smile.pt",
        "age": folder / "age.pt",
        "pose": folder / "pose.pt",
    }


@pytest.mark.parametrize("generator_kind", ["pt", "pkl"])
def test_assembles_a_model_the_pipeline_loads(pieces: dict[str, Path], tmp_path: Path,
                                              generator_kind: str) -> None:
    before = {name: path.read_bytes() for name, path in pieces.items()}
    out = tmp_path / "ffhq"
    model = assemble_model(pieces[generator_kind], pieces["encoder"], out,
                           direction_paths=[f"smile={pieces['smile']}", pieces["age"]])
    assert {name: path.read_bytes() for name, path in pieces.items()} == before  # only read

    bundle = load_model_bundle(out)
    generator = load_generator(pieces[generator_kind])
    assert model.resolution == RESOLUTION and model.n_latent == N_LATENT
    assert model.encoder_input == 256 and bundle.crop_size == 256
    assert model.model_fingerprint == bundle.fingerprint()
    # the encoder got the generator's latent_avg: w = offsets + w̄ on every layer
    torch.testing.assert_close(bundle.encoder.latent_avg,
                               generator.latent_avg.expand(N_LATENT, -1))
    # the directions are native, named, and stamped with the generator's fingerprint
    assert model.directions == ["smile", "age"]
    fingerprint = generator_fingerprint(bundle.generator)
    for name in ("smile", "age"):
        (direction,) = load_directions(out / "directions" / f"{name}.safetensors")
        assert direction.name == name and direction.generator_fingerprint == fingerprint
        direction.check_generator(bundle.generator)  # no warning, no mismatch
    card = (out / "MODEL_CARD.md").read_text()
    import hashlib

    assert hashlib.sha256(before[generator_kind]).hexdigest() in card
    assert model.model_fingerprint in card and "k = 5" in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffhq"]  # no temporary folders


def test_mismatches_are_named_and_leave_nothing(pieces: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    cases = [
        (pieces["encoder_1024"], [], r"18 W\+ entries \(a 1024 px generator's\), the 32 px "
                                     r"generator takes 8"),
        (pieces["encoder_128"], [], r"from a 128 px input.*takes 256 px"),
        (pieces["encoder"], [pieces["pose"]], r"pose\.pt: does not fit the generator"),
    ]
    for encoder, directions, message in cases:
        with pytest.raises(ModelMismatchError, match=message):
            assemble_model(pieces["pt"], encoder, out, direction_paths=directions)
        assert not out.exists() and list(tmp_path.iterdir()) == []


def test_latent_avg_is_checked(pieces: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    bare = StyleGAN2Generator(RESOLUTION, n_mlp=2, channel_max=16)  # latent_avg left at zero
    save_generator(bare, tmp_path / "bare.safetensors")
    with pytest.raises(ModelMismatchError, match="no latent_avg"):
        assemble_model(tmp_path / "bare.safetensors", pieces["encoder"], tmp_path / "m")

    # a native encoder trained with another generator's average latent
    encoder = encoder_from_official_state(torch.load(pieces["encoder"]), "enc")
    encoder.set_latent_avg(torch.ones(512))
    save_encoder(encoder, tmp_path / "encoder.safetensors")
    with pytest.raises(ModelMismatchError, match="latent_avg is not the generator's"):
        assemble_model(pieces["pt"], tmp_path / "encoder.safetensors", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_ffhq_1024_fits_the_official_256_px_encoder() -> None:
    with torch.device("meta"):
        generator = StyleGAN2Generator(1024)
        official = encoder_from_official_state(meta_state(), "143_enc.pth")
        wrong_input = FeatureStyleEncoder(n_latent=18, input_size=512, content_stride=2)
        generator_512 = StyleGAN2Generator(512)
    assert official.input_size == 256 and generator.n_latent == official.n_latent == 18
    assert shape_problems(generator, official) == []
    (problem,) = shape_problems(generator, wrong_input)
    assert "512 px input" in problem and "takes 256 px" in problem
    (problem,) = shape_problems(generator_512, official)
    assert "18 W+ entries (a 1024 px generator's), the 512 px generator takes 16" in problem


def test_output_folder_rules(pieces: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    assemble_model(pieces["pt"], pieces["encoder"], out)
    stamp = (out / "generator.safetensors").stat().st_mtime_ns
    with pytest.raises(VidinvError, match="--force"):
        assemble_model(pieces["pt"], pieces["encoder"], out)
    assert (out / "generator.safetensors").stat().st_mtime_ns == stamp
    assemble_model(pieces["pt"], pieces["encoder"], out, direction_paths=[pieces["age"]],
                   force=True)
    assert (out / "directions" / "age.safetensors").is_file()
    inside = out / "ffhq.pt"
    inside.write_bytes(pieces["pt"].read_bytes())
    with pytest.raises(VidinvError, match="holds the input"):
        assemble_model(inside, pieces["encoder"], out, force=True)
    assert inside.is_file()


def test_cli_assemble_and_a_mismatch_in_one_line(pieces: dict[str, Path],
                                                 tmp_path: Path) -> None:
    command = [sys.executable, "-m", "vidinv.cli", "models", "assemble", "--generator",
               str(pieces["pkl"])]
    done = subprocess.run([*command, "--encoder", str(pieces["encoder"]), "--directions",
                           f"smile={pieces['smile']}", "-o", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "32 px generator (8 W+ entries), 256 px encoder, directions: smile" in done.stdout
    failed = subprocess.run([*command, "--encoder", str(pieces["encoder_1024"]), "-o",
                             str(tmp_path / "n")], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.startswith("vidinv: error")]
    assert len(lines) == 1 and "18 W+ entries" in lines[0]


def test_force_replaces_only_a_model_folder_vidinv_wrote(pieces: dict[str, Path],
                                                        tmp_path: Path, monkeypatch) -> None:
    """--force replaces a folder with vidinv's manifest and nothing else in it; a user's folder
    (a thesis and photos, an old folder without the manifest, an extra file, a symlink) stays
    exactly as it was, refused in one line."""
    from vidinv.models.folder import MANIFEST_FILE, replaceable_model_folder

    out = tmp_path / "model"
    assemble_model(pieces["pt"], pieces["encoder"], out, direction_paths=[pieces["age"]])
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"generator.safetensors", "encoder.safetensors",
                                      "MODEL_CARD.md", "directions/age.safetensors"}
    assert replaceable_model_folder(out) is None
    assemble_model(pieces["pt"], pieces["encoder"], out, force=True)  # its own: replaced
    assert not (out / "directions" / "age.safetensors").exists()

    thesis = tmp_path / "thesis"
    (thesis / "photos").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("chapter 1")
    (thesis / "photos" / "a.jpg").write_bytes(b"\xff\xd8photo")
    extra = tmp_path / "extra"
    assemble_model(pieces["pt"], pieces["encoder"], extra)
    (extra / "notes.txt").write_text("mine")
    linked = tmp_path / "linked"
    assemble_model(pieces["pt"], pieces["encoder"], linked)
    (linked / "directions").mkdir(exist_ok=True)
    (linked / "directions" / "x.safetensors").symlink_to(thesis / "thesis.tex")
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / MANIFEST_FILE).write_text(json.dumps({"kind": "vidinv model folder",
                                                    "files": ["generator.safetensors"]}))
    (forged / "thesis.tex").write_text("chapter 2")
    for folder, why in ((thesis, "no vidinv-model.json"), (extra, "notes.txt"),
                        (linked, "symbolic link"), (forged, "thesis.tex")):
        before = sorted((p.relative_to(folder), p.is_file() and p.read_bytes())
                        for p in folder.rglob("*"))
        with pytest.raises(VidinvError, match=why) as caught:
            assemble_model(pieces["pt"], pieces["encoder"], folder, force=True)
        assert "\n" not in str(caught.value)
        assert sorted((p.relative_to(folder), p.is_file() and p.read_bytes())
                      for p in folder.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers

    # an empty folder the user made is simply filled; . and .. are one line, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assemble_model(pieces["pt"], pieces["encoder"], empty)
    assert (empty / "generator.safetensors").is_file()
    monkeypatch.chdir(out)
    for name in (".", "..", str(out), "../model/."):
        with pytest.raises(VidinvError, match="-o") as caught:
            assemble_model(pieces["pt"], pieces["encoder"], Path(name), force=True)
        assert "\n" not in str(caught.value)
    assert replaceable_model_folder(out) is None and (out / "generator.safetensors").is_file()


def test_assembled_files_follow_the_umask(pieces: dict[str, Path], tmp_path: Path) -> None:
    """Weight files get 0666 less the umask, like any file the user writes (not 0600)."""
    old = os.umask(0o022)
    try:
        assemble_model(pieces["pt"], pieces["encoder"], tmp_path / "m",
                       direction_paths=[pieces["age"]])
        os.umask(0o077)
        assemble_model(pieces["pt"], pieces["encoder"], tmp_path / "private")
    finally:
        os.umask(old)
    for name in ("generator.safetensors", "encoder.safetensors", "MODEL_CARD.md",
                 "vidinv-model.json", "directions/age.safetensors"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "private" / "generator.safetensors").stat().st_mode & 0o777 == 0o600
