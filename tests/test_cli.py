"""The `vidinv models` commands, run in-process through ``vidinv.cli.main``."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from tests.rosinality_reference import random_rosinality_state
from vidinv.cli import build_parser, main
from vidinv.cli.options import SETTING_OF_OPTION, pipeline_config
from vidinv.config import CHOICES
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


#: Options with choices that are not pipeline settings (what they pick is the command's own).
NOT_SETTINGS = {"--compare", "--modality", "--resolution", "--space"}


def _actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action) for every option and argument of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        else:
            yield path, action


def test_every_choice_of_a_setting_is_the_settings_allowed_values():
    offered = set()
    for path, action in _actions(build_parser()):
        if not action.choices:
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        where = f"vidinv {' '.join(path)} {name}"
        if name in NOT_SETTINGS:
            continue
        assert name in SETTING_OF_OPTION, f"{where}: choices of no known setting"
        assert tuple(action.choices) == CHOICES[SETTING_OF_OPTION[name]], where
        offered.add(name)
    assert offered == set(SETTING_OF_OPTION)


@pytest.mark.parametrize("option", sorted(SETTING_OF_OPTION))
def test_a_setting_option_sets_its_setting(option):
    section, field = SETTING_OF_OPTION[option].split(".")
    for value in CHOICES[SETTING_OF_OPTION[option]]:
        args = build_parser().parse_args(["edit", "clip.mp4", option, value])
        assert getattr(getattr(pipeline_config(args), section), field) == value, (option, value)


def test_a_bad_set_value_is_one_line_naming_the_allowed_values(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    for setting, allowed in CHOICES.items():
        out = tmp_path / "out.mp4"
        assert main(["edit", str(clip), "--attr", "smile", "-o", str(out), "--quiet",
                     "--set", f"{setting}=bogus"]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and setting in error, error
        assert error.endswith(f"is not one of: {', '.join(allowed)}"), error
        assert not out.exists()
