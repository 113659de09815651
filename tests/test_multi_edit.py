"""Several attributes in one pass: summed offsets, one Eq. 1 and one render per frame."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.media import real_clip_head
from tests.model_fixtures import make_tiny_model
from vidinv.config import PipelineConfig
from vidinv.frame import Frame
from vidinv.latent.directions import Direction, generator_fingerprint, save_directions
from vidinv.latent.editing import CombinedEditor, LatentEditor, direction_offset
from vidinv.models.stylegan2 import StyleGAN2Generator


def _directions(generator: StyleGAN2Generator) -> dict[str, Direction]:
    """Three directions on different layers: one below k = 5 (Eq. 1 moves F), two above."""
    torch.manual_seed(1)
    fingerprint = generator_fingerprint(generator)
    return {
        "smile": Direction(name="smile", vector=torch.randn(512) / 10, kind="interfacegan",
                           generator_fingerprint=fingerprint, layers=(0, 4)),
        "yaw": Direction(name="yaw", vector=torch.randn(512) / 10, kind="interfacegan",
                         generator_fingerprint=fingerprint, layers=(2, 3)),
        "mouth_open": Direction(name="mouth_open", vector=torch.randn(512) / 10,
                                kind="interfacegan", generator_fingerprint=fingerprint,
                                layers=(6, 7)),
    }


@pytest.fixture(scope="module")
def generator() -> StyleGAN2Generator:
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval()
    generator.latent_avg.copy_(generator.compute_latent_avg(256))
    return generator


def _codes(generator: StyleGAN2Generator, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    w = generator.latent_avg + torch.randn(batch, generator.n_latent, generator.style_dim) * 0.3
    features = generator.features(w, 5) + torch.randn(batch, *generator.synthesis
                                                      .feature_shape(5)) * 0.1
    return w, features


def test_combined_edit_equals_the_sum_of_offsets_edit(generator):
    directions = _directions(generator)
    strengths = {"smile": 2.0, "yaw": -1.0, "mouth_open": 0.5}
    combined = CombinedEditor.from_directions(generator, directions, strengths)
    offsets = {name: direction_offset(d, generator.n_latent, generator.style_dim)
               for name, d in directions.items()}
    summed = sum(alpha * offsets[name] for name, alpha in strengths.items())
    reference = LatentEditor(generator, summed, layers=None, check=False)
    w, features = _codes(generator)

    w_edit, f_edit = combined(w, features)
    w_ref, f_ref = reference(w, features)
    assert torch.allclose(w_edit, w_ref, atol=1e-6)
    assert torch.allclose(f_edit, f_ref, atol=1e-5)
    assert not torch.allclose(f_edit, features)  # smile and yaw reach below k: F moved
    # layers no direction touches (here layer 5) stay bit-identical
    assert torch.equal(w_edit[:, 5], w[:, 5])
    assert torch.allclose(combined.render(w, features), reference.render(w, features), atol=1e-5)

    # One attribute in a combined editor is the single-attribute editor, bit for bit.
    alone = CombinedEditor.from_directions(generator, directions, {"yaw": -1.5})
    single = LatentEditor(generator, directions["yaw"], -1.5)
    assert all(torch.equal(a, b) for a, b in zip(alone(w, features), single(w, features),
                                                 strict=True))
    # All strengths at 0 give the inversion back unchanged.
    zero = CombinedEditor.from_directions(generator, directions)
    assert all(a is b for a, b in zip(zero(w, features), (w, features), strict=True))
    # Strengths may change between calls (sliders, keys).
    combined.strengths["mouth_open"] = 0.0
    w_two, _ = combined(w, features)
    w_expected = w + 2.0 * offsets["smile"] - 1.0 * offsets["yaw"]
    assert torch.allclose(w_two, w_expected, atol=1e-6)


def test_three_attributes_cost_one_edit_render_call_per_batch(generator):
    """Several attributes are one summed offset: one call of the edit+render graph per batch,
    whatever their number, and the image is the combined editor's."""
    from vidinv.engines.model_graphs import EditRenderGraph
    from vidinv.stages.model import RenderFaces, tensor_to_images

    directions = _directions(generator)
    w, features = _codes(generator, batch=4)
    graph = EditRenderGraph(generator, k=5)
    for strengths in ({"smile": 2.0}, {"smile": 2.0, "yaw": -1.0, "mouth_open": 0.5}):
        editor = CombinedEditor.from_directions(generator, directions, strengths)
        offsets: list[torch.Tensor] = []

        def edit_render(codes, maps, offset, seen=offsets):
            seen.append(offset)
            return graph(codes, maps, offset), None

        frames = [Frame(index=i, image=np.zeros((8, 8, 3), np.uint8), w=w[i],
                        features=features[i]) for i in range(4)]
        out = list(RenderFaces(edit_render, editor, batch_size=4)(iter(frames)))
        assert len(offsets) == 1 and offsets[0].shape == w.shape
        assert all(torch.equal(row, editor.offset) for row in offsets[0])
        expected = tensor_to_images(editor.render(w, features))
        for frame, image in zip(out, expected, strict=True):
            assert np.abs(frame.rendered.astype(int) - image.astype(int)).max() <= 1


def test_parse_edits():
    from vidinv.latent.errors import UnknownAttributeError
    from vidinv.pipeline.attributes import parse_edits

    assert parse_edits(["smile=2", "yaw=-1", "mouth_open"], 0.5) == {
        "smile": 2.0, "yaw": -1.0, "mouth_open": 0.5}
    assert parse_edits(["smile"]) == {"smile": 1.0}
    with pytest.raises(UnknownAttributeError, match="must be a number"):
        parse_edits(["smile=big"])
    with pytest.raises(UnknownAttributeError, match="twice"):
        parse_edits(["smile=1", "smile=2"])
    with pytest.raises(UnknownAttributeError, match="name the attribute"):
        parse_edits(["=2"])


def test_live_controls_select_and_change_attributes(generator):
    from vidinv.pipeline.live import LiveControls

    editor = CombinedEditor.from_directions(generator, _directions(generator), {"yaw": 1.0})
    controls = LiveControls(editor)
    assert controls.selected == "yaw"  # the first attribute in force
    assert controls.press(ord("+")) is False
    assert editor.strengths["yaw"] == 1.5
    controls.press(ord("a"))
    assert controls.selected == "mouth_open"
    controls.press(ord("-"))
    assert editor.strengths == {"smile": 0.0, "yaw": 1.5, "mouth_open": -0.5}
    assert controls.label() == "yaw +1.5 [mouth_open -0.5]"
    controls.press(ord("0"))
    assert editor.strengths["mouth_open"] == 0.0
    controls.press(9)  # Tab wraps around
    assert controls.selected == "smile"
    assert controls.press(ord("q")) is True


# --- through the pipeline and the command line ----------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tiny model with three directions (smile, yaw, mouth_open)."""
    from vidinv.models.generator_io import load_generator

    folder = make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    generator = load_generator(folder / "generator.safetensors")
    for name, direction in _directions(generator).items():
        if name != "smile":
            save_directions(folder / "directions" / f"{name}.safetensors", direction)
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 10 frames of the real clip."""
    return real_clip_head(tmp_path_factory.mktemp("clip") / "talk.mp4", 10)


def test_process_video_with_several_attributes_is_the_summed_edit(model, clip, tmp_path):
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_editor, resolve_edits
    from vidinv.pipeline.clip import process_video

    bundle = load_model_bundle(model)
    # every frame rendered (key frames would leave the carried ones without a face to compare)
    config = PipelineConfig().with_overrides(["face.crop_smoothing=none",
                                              "latent.smoothing=none", "face.key_frames=false"])
    strengths = {"smile": 2.0, "yaw": -1.0, "mouth_open": 0.5}
    combined = resolve_edits(bundle, strengths)
    summed = sum(alpha * resolve_editor(bundle, name, 1.0).offset
                 for name, alpha in strengths.items())
    reference = LatentEditor(bundle.generator, summed, layers=None, k=bundle.k, check=False)
    faces: dict[str, list[np.ndarray]] = {"combined": [], "summed": [], "one": []}
    for name, editor in (("combined", combined), ("summed", reference),
                         ("one", resolve_editor(bundle, "smile", 2.0))):
        process_video(clip, tmp_path / f"{name}.mp4", bundle, config, editor, progress=False,
                      on_frame=lambda f, n=name: faces[n].append(f.rendered))
    assert len(faces["combined"]) == 10
    for a, b in zip(faces["combined"], faces["summed"], strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float sum order only
    assert any(not np.array_equal(a, b) for a, b in zip(faces["combined"], faces["one"],
                                                        strict=True))


def _vidinv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidinv.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_edit_with_several_attributes(model, clip, tmp_path):
    import av

    local = tmp_path / "talk.mp4"
    shutil.copy(clip, local)
    result = _vidinv("edit", str(local), "--attr", "smile=2", "--attr", "yaw=-1", "--attr",
                     "mouth_open=0.5", "--model", str(model), "--quiet")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "talk_smile+yaw+mouth_open.mp4"
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10

    unknown = _vidinv("edit", str(local), "--attr", "smile=2", "--attr", "frown=1",
                      "--model", str(model), "-o", str(tmp_path / "x.mp4"))
    assert unknown.returncode == 2
    line = unknown.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    assert "frown" in line and "mouth_open, smile, yaw" in line
    assert not (tmp_path / "x.mp4").exists()
