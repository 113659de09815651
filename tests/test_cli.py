"""The `vidinv models` commands, run in-process through ``vidinv.cli.main``."""

from __future__ import annotations

import subprocess
import sys

import torch

from tests.rosinality_reference import random_rosinality_state
from vidinv.cli import main
from vidinv.models import load_generator


def test_init_info_convert(tmp_path, capsys):
    native = tmp_path / "g.safetensors"
    assert main(["models", "init", str(native), "--resolution", "32", "--channel-max", "16",
                 "--n-mlp", "2"]) == 0
    assert main(["models", "info", str(native)]) == 0
    out = capsys.readouterr().out
    assert "resolution      32" in out and "n_latent        8" in out
    assert "channels        4:16, 8:16, 16:16, 32:16" in out and "GFLOP per image" in out

    state = random_rosinality_state(32, channels={4: 16, 8: 16, 16: 16, 32: 16}, n_mlp=2)
    torch.save({"g_ema": state, "latent_avg": torch.zeros(512)}, tmp_path / "r.pt")
    converted = tmp_path / "r.safetensors"
    assert main(["models", "convert", str(tmp_path / "r.pt"), str(converted)]) == 0
    ws = torch.randn(1, 8, 512)
    assert torch.equal(load_generator(converted).synthesis(ws),
                       load_generator(tmp_path / "r.pt").synthesis(ws))
    # An existing destination is not overwritten without --force.
    assert main(["models", "convert", str(tmp_path / "r.pt"), str(converted)]) == 2
    assert "--force" in capsys.readouterr().err


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04garbage")
    for args in (["models", "info", str(tmp_path / "missing.pt")],
                 ["models", "info", str(bad)],
                 ["models", "pull", "no-such-model", "--quiet"]):
        result = subprocess.run([sys.executable, "-m", "vidinv.cli", *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidinv: error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_engines_build_names_what_is_missing(tmp_path, capsys, monkeypatch):
    assert main(["engines", "build", "--model", str(tmp_path / "none")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from tests.model_fixtures import make_tiny_model

        monkeypatch.setenv("VIDINV_CACHE", str(tmp_path / "cache"))
        model = make_tiny_model(tmp_path / "tiny")
        assert main(["engines", "build", "--model", str(model)]) == 2
        assert "pip install 'vidinv[tensorrt]'" in capsys.readouterr().err
        assert not (tmp_path / "cache").exists()  # refused before exporting anything
