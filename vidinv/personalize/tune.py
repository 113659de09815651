"""Expression tuning: teach the generator the edits, as the pipeline will apply them.

A GAN trained for minutes on a CPU learns little of the expressions in the warped data, so
the directions found in its latent space move little. This step makes the edits exist: with the
encoder frozen, the codes (w, F) of each training crop x are fixed; for a warp of x of kind k and
amount a (the FACS expression set of :mod:`vidinv.personalize.warps`), the pipeline's own
edit — w̃ = w + a · d_k, F̃ = F + G_k(w̃) − G_k(w) (Eq. 1 of paper 003), i.e. strength α = 3a
with scale 1/3 — must render the warp, while the unedited codes must still render x. The
generator's weights and all the direction vectors d_k (one [K,L,512] tensor, started from the
paired-code means) are optimised together on that reconstruction loss (pixel MSE + the
multi-scale structure loss): generator tuning in the sense of the papers' PTI, over the
whole clip and its expressions.

Shapes: crops [N,S,S,3] uint8; codes w [N,L,512], F [N,C,h,h]; bank images [M,R,R,3] uint8 at
the generator's resolution R with ``bank_source`` [M] (index into the crops), ``bank_kind`` [M]
(index into :data:`~vidinv.personalize.warps.WARPS`) and ``bank_amount`` [M]. All the kinds
are tuned together, each drawn by its :data:`KIND_WEIGHT` share of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidinv.engines.model_graphs import EditRenderGraph
from vidinv.face.appearance import find_mouth_inside
from vidinv.face.expressions import AMOUNT_RANGE, WARPS
from vidinv.models import FEATURE_INDEX
from vidinv.personalize.warps import warp_face

#: Amounts of each warp in the bank (the signed ones also negative).
BANK_FRACTIONS = (1 / 3, 2 / 3, 1.0)
#: How often each kind's targets are drawn, relative to the others (each kind's share of the
#: steps, whatever its number of bank images): the smile — the edit users ask for first, and
#: the one with the most to learn (lips, cheeks, lids, teeth) — gets five shares; the head
#: turns, whose targets change most of the crop and so dominate the pixel loss, half a share;
#: roll none: rotating the whole crop is not something a few thousand CPU steps teach the
#: latent space (after 1200 steps its edit was a smear, and its large pixel change drowned
#: the smile's), so a kind with weight 0 is not tuned and gets no direction.
#: The eyes' edits (lids, irises) move a few pixels of a 64-px crop, so their pixel loss is
#: small and they were learnt least: eyes_closed and the horizontal gaze get one and a half.
KIND_WEIGHT = {"smile": 5.0, "mouth_open": 1.5, "frown": 1.5, "eyes_closed": 1.5,
               "gaze_horizontal": 1.5, "yaw": 0.5, "pitch": 0.5, "roll": 0.0}


def tuned_kinds() -> tuple[str, ...]:
    """The warp kinds that tuning teaches (weight > 0), in :data:`WARPS` order."""
    return tuple(kind for kind in WARPS if KIND_WEIGHT.get(kind, 1.0) > 0)


@dataclass(frozen=True)
class TuneConfig:
    batch: int = 8          # warped targets per step (each also rendered unedited)
    lr: float = 3e-4        # generator
    direction_lr: float = 3e-3
    structure_weight: float = 0.5
    change_weight: float = 8.0
    #: Extra weight of the change loss where the warp changes the crop (|T − X| over 0.1 of
    #: the range: lids, irises, lips), so a change of a few pixels is not averaged away by the
    #: rest of the crop.
    region_weight: float = 4.0
    seed: int = 0


def expression_bank(crops: np.ndarray, points: np.ndarray, resolution: int
                    ) -> dict[str, np.ndarray]:
    """Every crop warped by each kind at each of :data:`BANK_FRACTIONS` of its range (and the
    negative side for the signed ones: gaze, yaw, pitch, roll), resized to ``resolution``."""
    import cv2

    images, source, kind, amount = [], [], [], []
    inside = find_mouth_inside(crops, points)   # the person's own teeth, where the clip has them
    for i, (crop, face) in enumerate(zip(crops, points, strict=True)):
        for k, name in enumerate(WARPS):
            low, high = AMOUNT_RANGE[name]
            values = [f * high for f in BANK_FRACTIONS]
            if low < 0:
                values += [f * low for f in BANK_FRACTIONS]
            for value in values:
                warped = warp_face(crop, face, name, value, inside)
                images.append(cv2.resize(warped, (resolution, resolution),
                                         interpolation=cv2.INTER_AREA))
                source.append(i)
                kind.append(k)
                amount.append(value)
    return {"bank_images": np.stack(images), "bank_source": np.array(source),
            "bank_kind": np.array(kind), "bank_amount": np.array(amount, np.float32)}


def _unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class ExpressionTuner:
    """Optimises ``generator`` and the directions ``[K,L,512]`` (see the module docstring)."""

    def __init__(self, generator, w: torch.Tensor, features: torch.Tensor,
                 crops_small: np.ndarray, bank: dict[str, np.ndarray],
                 directions: torch.Tensor, config: TuneConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        from vidinv.train.losses import MultiScaleStructureLoss

        self.config = config or TuneConfig()
        self.device = torch.device(device)
        self.generator = generator.to(self.device).train().requires_grad_(True)
        # The pipeline's own edit graph: E = G(w + offset, F + G_k(w + offset) − G_k(w)) and
        # R = G(w, F) in one call.
        self.edit_render = EditRenderGraph(self.generator, FEATURE_INDEX,
                                           with_reconstruction=True)
        self.w, self.features = w.to(self.device), features.to(self.device)
        self.originals = _unit(crops_small).to(self.device)
        self.targets = _unit(bank["bank_images"]).to(self.device)
        self.source = torch.from_numpy(bank["bank_source"]).long()
        self.kind = torch.from_numpy(bank["bank_kind"]).long()
        self.amount = torch.from_numpy(bank["bank_amount"]).float()
        counts = torch.bincount(self.kind, minlength=len(WARPS)).clamp(min=1).float()
        weight = torch.tensor([KIND_WEIGHT.get(name, 1.0) for name in WARPS])
        self.draw_weight = (weight / counts)[self.kind]        # [M]: P(draw) ∝ this
        self.directions = torch.nn.Parameter(directions.clone().to(self.device))
        self.structure = MultiScaleStructureLoss().to(self.device)
        self.optimizer = torch.optim.Adam([
            {"params": [p for p in self.generator.parameters() if p.requires_grad],
             "lr": self.config.lr},
            {"params": [self.directions], "lr": self.config.direction_lr}], betas=(0.9, 0.999))
        self.rng = torch.Generator().manual_seed(self.config.seed)
        self.step = 0

    def loss(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (F.mse_loss(image, target)
                + self.config.structure_weight * self.structure(image, target).mean())

    def training_step(self) -> dict[str, float]:
        """One step on ``batch`` warped targets T of sources X: the graph renders E (edited)
        and R (unedited) of each source in one call; the loss asks E ≈ T and R ≈ X, and —
        weighted by ``change_weight`` — E − R ≈ T − X, the change alone (without it the shared
        reconstruction error drowns the few pixels an expression moves), and more where the
        warp changes the crop (``region_weight``)."""
        config = self.config
        pick = torch.multinomial(self.draw_weight, config.batch, replacement=True,
                                 generator=self.rng)
        src = self.source[pick].to(self.device)
        w, features = self.w[src], self.features[src]
        offset = self.amount[pick].to(self.device)[:, None, None] * self.directions[
            self.kind[pick].to(self.device)]
        edited, rebuilt = self.edit_render(w, features, offset)
        target, original = self.targets[pick.to(self.device)], self.originals[src]
        edit_loss = self.loss(edited, target)
        plain_loss = self.loss(rebuilt, original)
        wanted = target - original
        where = (wanted.abs().mean(1, keepdim=True) / 0.1).clamp(max=1.0)
        change_loss = ((1.0 + config.region_weight * where)
                       * (edited - rebuilt - wanted) ** 2).mean()
        total = edit_loss + plain_loss + config.change_weight * change_loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return {"edit": edit_loss.item(), "plain": plain_loss.item(),
                "change": change_loss.item()}

    def train(self, steps: int) -> list[dict[str, float]]:
        return [self.training_step() for _ in range(steps)]

    def state(self) -> dict:
        return {"generator": self.generator.state_dict(), "directions": self.directions.detach(),
                "optimizer": self.optimizer.state_dict(), "rng": self.rng.get_state(),
                "step": self.step}

    def load(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        with torch.no_grad():
            self.directions.copy_(state["directions"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])
