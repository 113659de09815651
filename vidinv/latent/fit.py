"""Finding edit directions for a generator: SeFa, GANSpace and InterFaceGAN.

* :func:`sefa_directions` — closed form (Shen & Zhou, "Closed-form factorization of latent
  semantics in GANs"): the modulation (affine) weights of the chosen styled convolutions are
  stacked into A [ΣC_in, D], each row (one input channel's style) is normalised to unit length,
  and the directions are the top eigenvectors of AᵀA [D,D] — the unit vectors n maximising
  ‖A n‖, i.e. that change those layers' styles the most. ToRGB layers are left out.
* :func:`ganspace_directions` — PCA of sampled W = mapping(z) (Härkönen et al., "GANSpace"):
  components (unit vectors), their standard deviations (the natural unit of α) and the mean.
* :func:`fit_interfacegan` — the InterFaceGAN recipe (Shen et al.): sample z → w, render, score
  each image with an attribute scorer, keep the top and bottom quantiles as positives and
  negatives, fit a linear SVM on w, and take its unit normal as the direction; the accuracy on
  held-out samples says how linear (and how learnable) the attribute is.

Every result records the generator's fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from vidinv.errors import BackendUnavailableError
from vidinv.latent.directions import (
    Direction,
    DirectionSet,
    generator_fingerprint,
    resolve_layers,
)
from vidinv.latent.errors import FittingError

if TYPE_CHECKING:
    from vidinv.models.stylegan2 import StyleGAN2Generator

#: Default share of samples kept at each end of the score range (InterFaceGAN used 2% of 500k
#: samples; with a few thousand samples a larger share keeps enough of them).
DEFAULT_QUANTILE = 0.1
#: Share of the kept samples used for training; the rest measure the accuracy.
DEFAULT_SPLIT_RATIO = 0.7
#: The SVM's C. InterFaceGAN used 1; with thousands of noisy, overlapping samples liblinear then
#: takes far longer for the same normal (cosine 0.94 with a hidden direction either way).
DEFAULT_SVM_C = 0.1


def _sign_fix(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (eigenvectors have no sign)."""
    index = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, index))
    signs[signs == 0] = 1
    return vectors * signs


# --- sampling --------------------------------------------------------------------------------


@torch.no_grad()
def sample_w(generator: StyleGAN2Generator, n_samples: int, seed: int = 0,
             truncation: float = 1.0, batch_size: int = 1024) -> torch.Tensor:
    """[n_samples, D] float32 CPU: mapping(z) of seeded standard-normal z (optionally truncated
    towards ``latent_avg``). The same seed gives the same codes on any device."""
    if n_samples < 1:
        raise ValueError("n_samples must be at least 1")
    device = generator.latent_avg.device
    z = torch.randn(n_samples, generator.style_dim,
                    generator=torch.Generator().manual_seed(seed))
    chunks = []
    for start in range(0, n_samples, batch_size):
        w = generator.mapping(z[start:start + batch_size].to(device))
        if truncation != 1.0:
            w = generator.latent_avg + truncation * (w - generator.latent_avg)
        chunks.append(w.float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def render_for_scoring(generator: StyleGAN2Generator, w: torch.Tensor,
                       size: int | None = 256) -> np.ndarray:
    """Render w [B,D] (the same code on every layer) as [B,S,S,3] uint8 RGB images.

    Images larger than ``size`` are resized down (bilinear, antialiased) first: landmarks do not
    need 1024 px, and scoring is much faster.
    """
    device = generator.latent_avg.device
    ws = w.to(device, generator.latent_avg.dtype)[:, None].expand(-1, generator.n_latent, -1)
    images = generator.synthesis(ws).float()
    if size is not None and images.shape[-1] > size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


# --- SeFa ------------------------------------------------------------------------------------


def sefa_weight(generator: StyleGAN2Generator,
                layers: range | slice | None = None) -> tuple[torch.Tensor, range]:
    """SeFa's matrix A [ΣC_in, D] float64 (rows normalised to unit length) and the W+ layers.

    The rows are the affine (modulation) weights ``synthesis.layers[j].affine.weight`` of the
    styled convolutions driven by the chosen W+ layers j (layer j is driven by ``w[:, j]``);
    the last W+ layer drives only a ToRGB and contributes no rows.
    """
    chosen = resolve_layers(layers, generator.n_latent, name="sefa")
    convs = [j for j in chosen if j < len(generator.synthesis.layers)]
    if not convs:
        raise FittingError(f"SeFa: W+ layers {chosen.start}..{chosen.stop - 1} drive no styled "
                           "convolution (only a ToRGB); choose lower layers")
    weight = torch.cat([generator.synthesis.layers[j].affine.weight.detach().double().cpu()
                        for j in convs])
    return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12), chosen


def sefa_directions(generator: StyleGAN2Generator, layers: range | slice | None = None,
                    k: int = 5) -> DirectionSet:
    """The top-``k`` SeFa directions for the chosen W+ layers (default all), as a set.

    Directions ``sefa0``, ``sefa1``, … are orthonormal [D] vectors, sorted by eigenvalue (kept in
    ``meta['eigenvalue']``), each applying to the chosen layers; signs are fixed so that each
    vector's largest entry is positive.
    """
    weight, chosen = sefa_weight(generator, layers)
    convs = [j for j in chosen if j < len(generator.synthesis.layers)]
    k = int(k)
    if not 1 <= k <= weight.shape[1]:
        raise ValueError(f"k must be in [1, {weight.shape[1]}], got {k}")
    values, vectors_np = np.linalg.eigh((weight.T @ weight).numpy())  # ascending
    eigenvalues, eigenvectors = torch.from_numpy(values), torch.from_numpy(vectors_np)
    order = torch.argsort(eigenvalues, descending=True)[:k]
    vectors = _sign_fix(eigenvectors[:, order].T).float()  # [k,D]
    fingerprint = generator_fingerprint(generator)
    total = float(eigenvalues.sum())
    layer_pair = (chosen.start, chosen.stop - 1)
    directions = [
        Direction(f"sefa{i}", vectors[i], kind="sefa",
                  layers=None if layer_pair == (0, generator.n_latent - 1) else layer_pair,
                  generator_fingerprint=fingerprint,
                  meta={"eigenvalue": float(eigenvalues[order[i]]),
                        "eigenvalue_ratio": float(eigenvalues[order[i]]) / total,
                        "rank": i, "factorized_layers": [convs[0], convs[-1]]})
        for i in range(k)
    ]
    return DirectionSet(directions)


# --- GANSpace --------------------------------------------------------------------------------


def ganspace_directions(generator: StyleGAN2Generator, n_samples: int = 10_000,
                        n_components: int = 20, seed: int = 0,
                        truncation: float = 1.0) -> DirectionSet:
    """PCA of ``n_samples`` sampled W codes: ``pc0``, ``pc1``, … with the W mean.

    Each component is a unit [D] vector with ``scale`` = its standard deviation (α = 1 moves by
    one σ, as in GANSpace), ``meta`` holding ``std`` and ``explained_variance_ratio`` (sorted,
    largest first). Apply a component to a layer range with :meth:`Direction.with_layers`. The
    edit is relative (w + α·σ·c), as in GANSpace's own tools; e4e's ``ganspace.edit`` instead
    *sets* the coordinate of ``w[0]`` to α.
    """
    w = sample_w(generator, n_samples, seed=seed, truncation=truncation).double()
    n_components = int(n_components)
    if not 1 <= n_components <= min(w.shape):
        raise ValueError(f"n_components must be in [1, {min(w.shape)}], got {n_components}")
    mean = w.mean(dim=0)
    _, singular, vt = torch.linalg.svd(w - mean, full_matrices=False)
    variance = singular.square() / max(n_samples - 1, 1)
    ratio = variance / variance.sum().clamp_min(1e-30)
    components = _sign_fix(vt[:n_components]).float()
    std = variance[:n_components].sqrt()
    fingerprint = generator_fingerprint(generator)
    directions = [
        Direction(f"pc{i}", components[i], kind="ganspace", scale=float(std[i]),
                  generator_fingerprint=fingerprint,
                  meta={"component": i, "std": float(std[i]),
                        "explained_variance_ratio": float(ratio[i]), "n_samples": n_samples,
                        "seed": seed, "truncation": truncation})
        for i in range(n_components)
    ]
    return DirectionSet(directions, mean=mean.float())


# --- InterFaceGAN ----------------------------------------------------------------------------


class LatentScorer:
    """A scorer of the codes themselves, w [B,D] -> [B] scores, with no rendering.

    For attributes known in W (a classifier already trained there, or a synthetic attribute in
    tests). :func:`fit_interfacegan` calls it on batches of w instead of rendering images.
    """

    def __init__(self, function: Callable[[torch.Tensor], Any], attribute: str = "latent") -> None:
        self.function = function
        self.attribute = attribute

    def __call__(self, w: torch.Tensor) -> np.ndarray:
        return np.asarray(self.function(w), dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class BoundaryFit:
    """A fitted InterFaceGAN boundary: the unit normal [D] (towards high scores) and its quality."""

    normal: np.ndarray
    accuracy: float
    train_accuracy: float
    n_train: int
    n_val: int
    n_valid: int
    low_threshold: float
    high_threshold: float


def fit_boundary(w: np.ndarray | torch.Tensor, scores: np.ndarray,
                 quantile: float = DEFAULT_QUANTILE, split_ratio: float = DEFAULT_SPLIT_RATIO,
                 seed: int = 0, C: float = DEFAULT_SVM_C) -> BoundaryFit:
    """InterFaceGAN's ``train_boundary``: a linear SVM between the top and bottom ``quantile``.

    w: [n,D]; scores: [n] (NaN = no score, dropped). The ``quantile`` share of the valid samples
    with the highest scores are positives, as many with the lowest negatives; each side is split
    ``split_ratio`` / rest into training and validation samples at random (``seed``). The codes
    are centred on the training mean (the normal does not change; the intercept then needs no
    large value that liblinear would penalise). ``C`` is the SVM's inverse regularisation.
    Returns the unit normal and the validation accuracy (NaN if no sample is left for
    validation).
    """
    try:
        from sklearn.svm import LinearSVC
    except ImportError as error:
        raise BackendUnavailableError("fitting InterFaceGAN directions needs scikit-learn: pip "
                                      "install scikit-learn") from error
    codes = np.asarray(w, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if codes.ndim != 2 or codes.shape[0] != scores.shape[0]:
        raise ValueError(f"w must be [n,D] and scores [n], got {codes.shape} and {scores.shape}")
    if not 0 < quantile <= 0.5 or not 0 < split_ratio < 1:
        raise ValueError("quantile must be in (0, 0.5] and split_ratio in (0, 1)")
    valid = np.isfinite(scores)
    codes, scores = codes[valid], scores[valid]
    order = np.argsort(-scores, kind="stable")
    chosen = min(int(len(scores) * quantile), len(scores) // 2)
    n_train = int(chosen * split_ratio)
    if n_train < 2 or chosen - n_train < 1:
        raise FittingError(f"only {len(scores)} of {valid.size} samples were scored; "
                           f"{quantile:g} of them leaves too few to fit and test a boundary "
                           "(use more samples or a larger quantile)")
    rng = np.random.default_rng(seed)
    positives = order[:chosen][rng.permutation(chosen)]
    negatives = order[-chosen:][rng.permutation(chosen)]
    train = np.concatenate([positives[:n_train], negatives[:n_train]])
    val = np.concatenate([positives[n_train:], negatives[n_train:]])
    train_labels = np.concatenate([np.ones(n_train), np.zeros(n_train)]).astype(np.int64)
    val_labels = np.concatenate([np.ones(chosen - n_train),
                                 np.zeros(chosen - n_train)]).astype(np.int64)
    centre = codes[train].mean(axis=0)
    svm = LinearSVC(C=C, max_iter=20_000, random_state=seed)
    svm.fit(codes[train] - centre, train_labels)
    normal = svm.coef_.reshape(-1)
    norm = float(np.linalg.norm(normal))
    if not math.isfinite(norm) or norm == 0:
        raise FittingError("the SVM found no boundary (all codes alike?)")
    accuracy = float(svm.score(codes[val] - centre, val_labels)) if len(val) else math.nan
    return BoundaryFit(
        normal=(normal / norm).astype(np.float32), accuracy=accuracy,
        train_accuracy=float(svm.score(codes[train] - centre, train_labels)),
        n_train=2 * n_train, n_val=len(val), n_valid=int(valid.sum()),
        low_threshold=float(scores[order[-chosen]]),
        high_threshold=float(scores[order[chosen - 1]]))


def _score_images(scorer: Callable[..., Any], images: np.ndarray) -> np.ndarray:
    batch = getattr(scorer, "score_batch", None)
    if batch is not None:
        return np.asarray(batch(images), dtype=np.float64).reshape(-1)
    return np.array([float(scorer(image)) for image in images], dtype=np.float64)


#: Rendered samples after which fitting stops if none of them got a score.
_GIVE_UP_AFTER = 64


def _too_few_scored(n_scored: int, n_samples: int, name: str) -> str:
    return (f"only {n_scored} of {n_samples} rendered samples got a {name} score (no face "
            "found?); the generator must render faces — an untrained one does not")


def fit_interfacegan(generator: StyleGAN2Generator,
                     scorer: Callable[[np.ndarray], float] | LatentScorer,
                     n_samples: int = 2000, *, attribute: str | None = None,
                     quantile: float = DEFAULT_QUANTILE,
                     split_ratio: float = DEFAULT_SPLIT_RATIO, seed: int = 0,
                     truncation: float = 1.0, batch_size: int = 16,
                     score_size: int | None = 256, C: float = DEFAULT_SVM_C,
                     progress: bool = False) -> Direction:
    """Fit an InterFaceGAN direction for the attribute that ``scorer`` measures.

    ``n_samples`` seeded z are mapped to w (truncated by ``truncation``), rendered in batches of
    ``batch_size`` without autograd (resized to ``score_size``), and scored: ``scorer(image)``
    on [H,W,3] uint8 RGB images returns a float or NaN (no face), or ``scorer.score_batch``
    when it has one (e.g. :class:`~vidinv.latent.scorers.LandmarkScorer`); a
    :class:`LatentScorer` scores the codes directly. Then :func:`fit_boundary`. Rendering stops
    early when the first 64 samples get no score at all.

    Returns a [D] direction (all layers) with ``meta``: ``attribute``, ``accuracy`` (held-out),
    ``train_accuracy``, ``n_samples``, ``n_scored``, ``n_train``, ``n_val``, ``quantile``,
    ``truncation``, ``seed``. Raises :class:`FittingError` when too few samples get a score
    (an untrained generator renders no faces).
    """
    name = attribute or getattr(scorer, "attribute", None) or "attribute"
    w = sample_w(generator, n_samples, seed=seed, truncation=truncation)
    if isinstance(scorer, LatentScorer):
        scores = scorer(w)
    else:
        from tqdm import tqdm

        parts = []
        n_scored = 0
        with tqdm(total=n_samples, desc=f"scoring {name}", unit="img", disable=not progress,
                  leave=False) as bar:
            for start in range(0, n_samples, batch_size):
                images = render_for_scoring(generator, w[start:start + batch_size], score_size)
                parts.append(_score_images(scorer, images))
                n_scored += int(np.isfinite(parts[-1]).sum())
                bar.update(len(images))
                done = start + len(images)
                if n_scored == 0 and done >= _GIVE_UP_AFTER and done < n_samples:
                    raise FittingError(_too_few_scored(n_scored, done, name))
        scores = np.concatenate(parts)
    if scores.shape != (n_samples,):
        raise ValueError(f"the scorer returned {scores.shape} scores for {n_samples} samples")
    n_scored = int(np.isfinite(scores).sum())
    if n_scored < max(20, n_samples // 10):
        raise FittingError(_too_few_scored(n_scored, n_samples, name))
    fit = fit_boundary(w, scores, quantile=quantile, split_ratio=split_ratio, seed=seed, C=C)
    return Direction(
        name, torch.from_numpy(fit.normal), kind="interfacegan",
        generator_fingerprint=generator_fingerprint(generator),
        meta={"attribute": name, "accuracy": fit.accuracy, "train_accuracy": fit.train_accuracy,
              "n_samples": n_samples, "n_scored": n_scored, "n_train": fit.n_train,
              "n_val": fit.n_val, "quantile": quantile, "truncation": truncation, "seed": seed,
              "score_thresholds": [fit.low_threshold, fit.high_threshold]})
