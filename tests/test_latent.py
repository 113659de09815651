"""Latent editing (Eq. 1 of paper 003) and finding directions (SeFa, GANSpace, InterFaceGAN) on
a tiny random generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidinv.latent.directions import Direction, generator_fingerprint
from vidinv.latent.editing import (
    LatentEditor,
    apply_direction,
    direction_offset,
    edit_with_features,
    render_edit,
)
from vidinv.latent.errors import DirectionError, FittingError
from vidinv.latent.fit import (
    LatentScorer,
    fit_boundary,
    fit_interfacegan,
    ganspace_directions,
    sample_w,
    sefa_directions,
    sefa_weight,
)
from vidinv.models.stylegan2 import StyleGAN2Generator

K = 5

# Directions built here carry no fingerprint; the warning is tested in test_directions.py.
pytestmark = pytest.mark.filterwarnings("ignore::vidinv.latent.errors.UnverifiedDirectionWarning")


@pytest.fixture(scope="module")
def generator() -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(32, n_mlp=2, channel_max=16).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def inversion(generator) -> tuple[torch.Tensor, torch.Tensor]:
    """W+ codes [2,8,512] and a feature tensor [2,16,16,16] that is *not* G's own (as an
    encoder's F is not)."""
    gen = torch.Generator().manual_seed(1)
    w = generator.mapping(torch.randn(2, 512, generator=gen))[:, None].repeat(1, 8, 1)
    w = w + 0.3 * torch.randn(w.shape, generator=gen)
    features = generator.features(w, K) + 0.2 * torch.randn(2, 16, 16, 16, generator=gen)
    return w, features


def _unit(seed: int, shape=(512,)) -> torch.Tensor:
    v = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


# --- editing -----------------------------------------------------------------------------------


def test_zero_strength_reproduces_the_inversion_exactly(generator, inversion):
    w, features = inversion
    inverted = generator.synthesis(w, features=features, k=K)
    for direction in (Direction("all", _unit(0)), Direction("early", _unit(1), layers=(0, 3)),
                      _unit(2, (8, 512))):
        assert torch.equal(render_edit(generator, w, features, direction, 0.0), inverted)
        editor = LatentEditor(generator, direction, strength=0.0)
        w_edit, f_edit = editor(w, features)
        assert torch.equal(w_edit, w) and torch.equal(f_edit, features)
        assert torch.equal(editor.render(w, features), inverted)
    # the edit itself at α = 0 leaves the codes bit-identical
    assert torch.equal(apply_direction(w, _unit(3), 0.0), w)


def test_edit_above_k_leaves_the_feature_tensor_alone(generator, inversion):
    w, features = inversion
    for first in (K, K + 1):
        direction = Direction("late", _unit(4), layers=(first, 7))
        w_edit = apply_direction(w, direction, 2.0)
        assert torch.equal(w_edit[:, :first], w[:, :first])
        assert not torch.equal(w_edit[:, first:], w[:, first:])
        f_edit = edit_with_features(generator, w, features, w_edit, K)
        assert torch.equal(f_edit, features)
        image = render_edit(generator, w, features, direction, 2.0)
        assert torch.equal(image, generator.synthesis(w_edit, features=features, k=K))
        editor = LatentEditor(generator, direction, strength=2.0)
        assert not editor.moves_features
        assert torch.equal(editor.render(w, features), image)


def test_edit_below_k_moves_the_feature_tensor_by_eq1(generator, inversion):
    w, features = inversion
    direction = Direction("all", _unit(5))
    w_edit = apply_direction(w, direction, 3.0)
    f_edit = edit_with_features(generator, w, features, w_edit, K)
    expected = features + generator.features(w_edit, K) - generator.features(w, K)
    torch.testing.assert_close(f_edit, expected, rtol=0, atol=1e-5)
    assert (f_edit - features).abs().max() > 1e-3
    # With G's own features as F, the edited render is the plain W+ render of w̃.
    own = generator.features(w, K)
    edited = render_edit(generator, w, own, direction, 3.0)
    torch.testing.assert_close(edited, generator.synthesis(w_edit), rtol=0, atol=1e-5)
    editor = LatentEditor(generator, direction, strength=3.0)
    assert editor.moves_features
    torch.testing.assert_close(editor.render(w, features),
                               generator.synthesis(w_edit, features=expected, k=K),
                               rtol=0, atol=1e-5)


def test_only_changed_samples_get_a_feature_correction(generator, inversion):
    w, features = inversion
    w_edit = w.clone()
    w_edit[1, :3] += _unit(6)
    f_edit = edit_with_features(generator, w, features, w_edit, K)
    assert torch.equal(f_edit[0], features[0])
    assert not torch.equal(f_edit[1], features[1])


@pytest.mark.parametrize("shape", [(512,), (1, 512), (8, 512), (1, 8, 512), (1, 8 * 512)])
def test_every_direction_shape_broadcasts(shape, inversion):
    w, _ = inversion
    vector = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    per_layer = vector.reshape(-1, 512).expand(8, 512) if vector.numel() == 512 \
        else vector.reshape(8, 512)
    edited = apply_direction(w, vector, 1.5)
    torch.testing.assert_close(edited, w + 1.5 * per_layer, rtol=0, atol=1e-6)
    # a layer range moves only those layers and leaves the others bit-identical
    for layers in (range(2, 5), slice(2, 5)):
        edited = apply_direction(w, vector, 1.5, layers=layers)
        assert torch.equal(edited[:, :2], w[:, :2]) and torch.equal(edited[:, 5:], w[:, 5:])
        torch.testing.assert_close(edited[:, 2:5], w[:, 2:5] + 1.5 * per_layer[2:5],
                                   rtol=0, atol=1e-6)
    # one frame's codes [N,D] and per-sample strengths
    torch.testing.assert_close(apply_direction(w[0], vector, 1.5), w[0] + 1.5 * per_layer,
                               rtol=0, atol=1e-6)
    edited = apply_direction(w, vector, torch.tensor([0.0, 2.0]))
    assert torch.equal(edited[0], w[0])
    torch.testing.assert_close(edited[1], w[1] + 2 * per_layer, rtol=0, atol=1e-6)


def test_direction_scale_and_own_layers(inversion):
    w, _ = inversion
    b = torch.randn(1, 8 * 512, generator=torch.Generator().manual_seed(8))
    fse = Direction("smile", b, kind="interfacegan", scale=15.0)  # FSE: w + 15·α·b
    torch.testing.assert_close(apply_direction(w, fse, 0.2), w + 15 * 0.2 * b.reshape(8, 512),
                               rtol=0, atol=1e-5)
    own = Direction("mid", _unit(9), layers=(3, 4), scale=2.0)
    edited = apply_direction(w, own, 1.0)
    assert torch.equal(edited[:, :3], w[:, :3]) and torch.equal(edited[:, 5:], w[:, 5:])
    torch.testing.assert_close(edited[:, 3:5], w[:, 3:5] + 2 * own.vector, rtol=0, atol=1e-6)
    # an explicit range overrides the direction's own; None means all layers
    assert torch.equal(apply_direction(w, own, 1.0, layers=range(0, 1))[:, 1:], w[:, 1:])
    assert not torch.equal(apply_direction(w, own, 1.0, layers=None)[:, 7], w[:, 7])
    offset = direction_offset(own, 8, 512)
    assert offset[[0, 1, 2, 5, 6, 7]].abs().sum() == 0


def test_shapes_and_layers_that_do_not_fit_are_errors(generator, inversion):
    w, _ = inversion
    with pytest.raises(DirectionError, match="18 layers, the generator 8"):
        apply_direction(w, torch.randn(18, 512), 1.0)
    with pytest.raises(DirectionError, match="does not fit"):
        apply_direction(w, torch.randn(1, 300), 1.0)
    with pytest.raises(DirectionError, match="outside"):
        apply_direction(w, _unit(0), 1.0, layers=range(6, 10))
    with pytest.raises(DirectionError, match="outside"):
        LatentEditor(generator, Direction("x", _unit(0), layers=(7, 9)))


def test_latent_editor_on_single_frames(generator, inversion):
    w, features = inversion
    editor = LatentEditor(generator, Direction("all", _unit(10)), strength=1.0)
    w_edit, f_edit = editor(w[0], features[0])  # one frame, as Frame holds it
    assert w_edit.shape == (8, 512) and f_edit.shape == (16, 16, 16)
    batch_w, batch_f = editor(w, features)
    torch.testing.assert_close(w_edit, batch_w[0], rtol=0, atol=0)
    torch.testing.assert_close(f_edit, batch_f[0], rtol=0, atol=1e-5)
    editor.strength = 0.0  # a slider moved back to zero
    assert editor(w, features)[1] is features


# --- SeFa ----------------------------------------------------------------------------------------


def test_sefa_directions_are_the_top_eigenvectors(generator):
    directions = sefa_directions(generator, k=6)
    vectors = torch.stack([d.vector for d in directions]).double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(6, dtype=torch.float64),
                               rtol=0, atol=1e-5)
    # independently: the affine weights of the 7 styled convs, rows normalised
    rows = np.concatenate([layer.affine.weight.numpy() for layer in generator.synthesis.layers])
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert rows.shape == (7 * 16, 512)
    values, vecs = np.linalg.eigh(rows.T.astype(np.float64) @ rows)
    top = vecs[:, -1]
    assert abs(float(np.dot(top, directions[0].vector.numpy()))) > 0.9999
    eigenvalues = [d.meta["eigenvalue"] for d in directions]
    assert eigenvalues == sorted(eigenvalues, reverse=True)
    assert math.isclose(eigenvalues[0], float(values[-1]), rel_tol=1e-6)
    assert all(d.kind == "sefa" and d.layers is None for d in directions)
    assert directions[0].generator_fingerprint == generator_fingerprint(generator)
    # A norm check: the top direction moves the styles more than a random one.
    assert np.linalg.norm(rows @ top) > 2 * np.linalg.norm(rows @ _unit(0).double().numpy())


def test_sefa_on_a_layer_range(generator):
    weight, chosen = sefa_weight(generator, range(0, 3))
    assert chosen == range(0, 3) and weight.shape == (3 * 16, 512)
    directions = sefa_directions(generator, range(0, 3), k=2)
    assert directions[0].layers == (0, 2) and directions[0].meta["factorized_layers"] == [0, 2]
    with pytest.raises(FittingError, match="ToRGB"):
        sefa_directions(generator, range(7, 8))


# --- GANSpace ------------------------------------------------------------------------------------


def test_ganspace_components(generator):
    directions = ganspace_directions(generator, n_samples=2000, n_components=8, seed=3)
    vectors = torch.stack([d.vector for d in directions]).double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(8, dtype=torch.float64),
                               rtol=0, atol=1e-5)
    ratios = [d.meta["explained_variance_ratio"] for d in directions]
    assert ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) < 1
    # the scale of each component is the standard deviation of the samples along it
    w = sample_w(generator, 2000, seed=3)
    torch.testing.assert_close(directions.mean, w.mean(dim=0), rtol=0, atol=1e-4)
    projections = (w - directions.mean) @ vectors.float().T
    torch.testing.assert_close(projections.std(dim=0),
                               torch.tensor([d.scale for d in directions]), rtol=1e-3, atol=0)
    # an edit is (component, first layer, last layer, strength)
    pc = directions["pc1"].with_layers(2, 4)
    codes = w[:2, None].repeat(1, 8, 1)
    edited = apply_direction(codes, pc, 3.0)
    assert torch.equal(edited[:, :2], codes[:, :2]) and torch.equal(edited[:, 5:], codes[:, 5:])
    torch.testing.assert_close(edited[:, 2:5] - codes[:, 2:5],
                               (3.0 * pc.scale * pc.vector).expand(2, 3, 512),
                               rtol=0, atol=1e-5)


# --- InterFaceGAN --------------------------------------------------------------------------------


def test_interfacegan_recovers_a_hidden_direction(generator):
    hidden = _unit(11)
    noise = torch.Generator().manual_seed(12)

    def hidden_attribute(w: torch.Tensor) -> torch.Tensor:
        projection = w @ hidden
        return projection + 0.1 * projection.std() * torch.randn(len(w), generator=noise)

    direction = fit_interfacegan(generator, LatentScorer(hidden_attribute, "hidden"),
                                 n_samples=8000, quantile=0.3)
    assert direction.kind == "interfacegan" and direction.name == "hidden"
    assert float(direction.vector @ hidden) > 0.9  # and it points towards high scores
    assert direction.meta["accuracy"] > 0.9
    assert direction.meta["n_samples"] == 8000 and direction.meta["n_val"] == 2 * 720
    assert direction.generator_fingerprint == generator_fingerprint(generator)
    assert math.isclose(float(direction.vector.norm()), 1.0, rel_tol=1e-5)


def test_interfacegan_renders_and_scores_images(generator):
    seen = []

    def redness(image: np.ndarray) -> float:
        seen.append((image.shape, image.dtype))
        return float(image[..., 0].mean()) - float(image[..., 2].mean())

    direction = fit_interfacegan(generator, redness, n_samples=48, quantile=0.5,
                                 attribute="redness", batch_size=20)
    assert seen == [((32, 32, 3), np.uint8)] * 48
    assert direction.name == "redness" and direction.meta["n_scored"] == 48
    assert math.isfinite(direction.meta["accuracy"])

    calls = []

    def no_face(image: np.ndarray) -> float:
        calls.append(1)
        return math.nan

    with pytest.raises(FittingError, match="only 0 of 64 rendered samples got a smile score"):
        fit_interfacegan(generator, no_face, n_samples=1000, attribute="smile", batch_size=32)
    assert len(calls) == 64  # it gives up early


def test_fit_boundary_drops_unscored_samples():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(600, 16))
    scores = w[:, 0] + 0.05 * rng.normal(size=600)
    scores[::3] = np.nan
    fit = fit_boundary(w, scores, quantile=0.25)
    assert fit.n_valid == 400 and fit.n_train == 2 * 70 and fit.n_val == 2 * 30
    assert fit.normal[0] > 0.9 and fit.accuracy > 0.95
    with pytest.raises(FittingError, match="too few"):
        fit_boundary(w[:8], scores[:8], quantile=0.1)
