"""The [edit] settings work: `--set edit.attribute=… edit.strength=… edit.first_layer=…` pick
the edit when --attr / --strength are not given (and the command line wins when they are)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tests.model_fixtures import make_tiny_model
from vidinv.cli import _edit_choice
from vidinv.config import PipelineConfig
from vidinv.errors import VidinvError
from vidinv.pipeline.app import resolve_editor
from vidinv.pipeline.models import load_model_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_model_bundle(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


def _args(attr: str | None = None, strength: float | None = None) -> argparse.Namespace:
    return argparse.Namespace(attr=attr, strength=strength)


def test_edit_settings_choose_the_edit(bundle) -> None:
    config = PipelineConfig().with_overrides(["edit.attribute=smile", "edit.strength=2.5",
                                              "edit.first_layer=4"])
    attribute, strength, layers = _edit_choice(_args(), config, bundle)
    assert (attribute, strength, layers) == ("smile", 2.5, (4, bundle.generator.n_latent - 1))
    editor = resolve_editor(bundle, attribute, strength, layers)
    assert editor.strength == 2.5
    assert not editor.offset[:4].any() and bool(editor.offset[4:].abs().sum() > 0)

    assert _edit_choice(_args("other", 1.0), config, bundle)[:2] == ("other", 1.0)
    assert _edit_choice(_args(), PipelineConfig(), bundle) == (None, 1.0, None)
    narrow = PipelineConfig().with_overrides(["edit.first_layer=2", "edit.last_layer=3"])
    assert _edit_choice(_args(), narrow, bundle)[2] == (2, 3)
    editor = resolve_editor(bundle, "smile", 1.0, (2, 3))
    rows = editor.offset.abs().sum(dim=1) > 0
    assert torch.equal(rows.nonzero().flatten(), torch.tensor([2, 3]))


def test_edit_layers_outside_the_model_are_one_line_errors(bundle, tmp_path: Path) -> None:
    config = PipelineConfig().with_overrides(["edit.first_layer=5", "edit.last_layer=99"])
    with pytest.raises(VidinvError, match=r"edit\.first_layer/last_layer \(5, 99\)"):
        _edit_choice(_args("smile"), config, bundle)
