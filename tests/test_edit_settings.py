"""The [edit] settings work: `--set edit.attribute=… edit.strength=…` pick the edit when
--attr / --strength are not given (and the command line wins when they are)."""

from __future__ import annotations

import argparse

from vidinv.cli.options import edits_from_args
from vidinv.config import PipelineConfig


def _args(attr: list[str] | None = None, strength: float | None = None) -> argparse.Namespace:
    return argparse.Namespace(attr=attr, strength=strength)


def test_edit_settings_choose_the_edit() -> None:
    config = PipelineConfig().with_overrides(["edit.attribute=smile", "edit.strength=2.5"])
    assert edits_from_args(_args(), config) == {"smile": 2.5}
    assert edits_from_args(_args(strength=1.5), config) == {"smile": 1.5}
    assert edits_from_args(_args(["yaw=-1", "mouth_open"]), config) == {"yaw": -1.0,
                                                                        "mouth_open": 2.5}
    assert edits_from_args(_args(), PipelineConfig()) == {}


def test_cli_edit_uses_the_preset_edit(tmp_path) -> None:
    """End to end: with no --attr the [edit] section names the attribute (here an unknown one,
    which the command reports in one line)."""
    import subprocess
    import sys

    from tests.media import make_video

    clip = make_video(tmp_path / "pattern.mp4", n_frames=4, size=(96, 80)).path
    result = subprocess.run([sys.executable, "-m", "vidinv.cli", "edit", str(clip),
                             "--set", "edit.attribute=nonexistent", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "nonexistent" in result.stderr
