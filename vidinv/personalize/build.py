"""``vidinv personalize``: a model for the face in one clip, within a time budget.

Steps (each resumable from the run folder ``OUT/.personalize/``; Ctrl-C leaves a checkpoint).
The run folder records what the run was started with (``inputs.json``: the clip's size and
sha256, and every setting that shapes the model); a resume with another clip or other settings
is refused in one line (:class:`ResumeMismatchError`) rather than continued with the old data:

1. data — align the clip's frames (:func:`~vidinv.personalize.data.collect_faces`), hold out
   the frames asked for, and build the expression set (the FACS warps of
   :mod:`~vidinv.personalize.warps` plus jitter).
2. generator — train StyleGAN2 on the set (started from the embedded default model when it has
   the same shape, else from scratch).
3. encoder — train the Feature-Style Encoder on the generator's samples and the set.
4. tune — expression tuning (:mod:`vidinv.personalize.tune`): each warp's direction starts as
   the mean over training crops of E(warp(x, strongest)) − E(x); then the generator and the
   directions are optimised so that the pipeline's own edit (Eq. 1, strength 3 = the strongest
   warp, scale 1/3) renders the warped crops and the unedited codes still render the crops.
5. directions — the tuned ones (plus eyes_open = −eyes_closed), each scaled so that strength 3
   moves its landmarks as far as the strongest warp (measured with the MediaPipe mesh that
   defined the warps: :mod:`vidinv.personalize.calibrate`), plus 5 SeFa components.
6. package — weights, directions, evaluation.json and MODEL_CARD.md into ``OUT``.

The time budget (``minutes``) is split 20 % generator, 20 % encoder, 50 % tuning by default
(``split``), the rest data and directions; each trainer runs until its share of the wall time
is spent, so the budget holds on any machine (the card records the steps that fit).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidinv.errors import VidinvError
from vidinv.face.expressions import EDIT_OF_WARP, EXTRA_EDITS, WARPS
from vidinv.models import FEATURE_INDEX
from vidinv.models.folder import (
    DEFAULT_MODEL_FOLDER,
    ENCODER_FILE,
    GENERATOR_FILE,
    PERSONALIZE_WORK_FOLDER,
    TRAINING_STATE_FILE,
    direction_file,
    folder_fingerprint,
    is_model_folder,
    save_model_folder,
    save_mouth_inside,
    write_manifest,
)

log = logging.getLogger(__name__)

WORK_FOLDER = PERSONALIZE_WORK_FOLDER
#: In the run folder: what the run was started with (clip, settings), checked on a resume.
INPUTS_FILE = "inputs.json"
#: Settings that do not change what is built, so a resume may change them.
RESUMABLE_WITH_OTHER = ("device", "threads")
#: Generator shapes per resolution: (channel_max, channel_multiplier); see GanTrainConfig.
GENERATOR_SHAPES = {64: (128, 0.125), 128: (128, 0.25), 256: (128, 0.5)}
ENCODER_WIDTHS = (16, 32, 48, 64)
ENCODER_BLOCKS = (1, 2, 2, 1)
#: Default split of the time budget: GAN training, encoder training, expression tuning (the
#: rest goes to data and directions).
DEFAULT_SPLIT = (0.2, 0.2, 0.5)
#: Adam lr of G and D when the GAN starts from a trained generator (2e-3 from scratch).
FINE_TUNE_GAN_LR = 5e-4
#: Seconds of training between progress updates and checkpoints.
CHUNK_SECONDS = 20.0
DIRECTION_FRAMES = 48
#: Training crops on which each direction's landmark motion is measured.
CALIBRATION_FRAMES = 16
#: Fraction of the encoder's time after which its learning rate drops tenfold.
LR_DECAY_AT = 0.8
SEFA_COMPONENTS = 5


@dataclass(frozen=True)
class PersonalizeSettings:
    """What ``vidinv personalize`` was asked for."""

    minutes: float = 30.0
    resolution: int = 64
    device: str = "cpu"
    heldout: tuple[int, int] | None = None   # (first, last) frame index held out, inclusive
    init: str = "default"                     # default | none | a model folder
    warp_copies: int = 1
    seed: int = 0
    threads: int = 2
    split: tuple[float, float, float] = DEFAULT_SPLIT  # generator, encoder, tune
    face: str = "largest"                     # the person of the clip: largest, or an index
    face_reference: str = ""                  # or a photo of them (wins over face)

    def share(self, stage: str) -> float:
        return dict(zip(("generator", "encoder", "tune"), self.split, strict=True))[stage]

    def __post_init__(self) -> None:
        if (len(self.split) != 3 or any(not (0 <= v <= 1) for v in self.split)
                or sum(self.split) > 1 or sum(self.split) <= 0):
            raise VidinvError(f"--split {self.split}: three shares of the time for generator, "
                              "encoder and tuning, each in [0,1], summing to at most 1")
        if self.resolution not in GENERATOR_SHAPES:
            raise VidinvError(f"--resolution {self.resolution}: choose one of "
                              f"{', '.join(map(str, GENERATOR_SHAPES))}")
        if not (self.minutes > 0 and np.isfinite(self.minutes)):
            raise VidinvError(f"--minutes {self.minutes}: give a positive number of minutes")


class ResumeMismatchError(VidinvError):
    """A stopped run's folder was made from another clip or with other settings."""


@dataclass
class StepRecord:
    """Steps and wall seconds spent on one part of the build."""

    steps: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[str, int, int], None]


def stored_tuned_vectors(folder: Path) -> dict[str, torch.Tensor]:
    """The tuned vector [L,512] of each warp kind whose direction a ``vidinv personalize``
    model folder stores (a direction is stored as sign × the tuned vector: eyes_open =
    −eyes_closed)."""
    from vidinv.latent.directions import direction_files, load_directions

    tuned: dict[str, torch.Tensor] = {}
    for file in direction_files(folder):
        for direction in load_directions(file).directions:
            meta = direction.meta
            if meta.get("source") == "vidinv personalize" and "warp" in meta:
                tuned.setdefault(meta["warp"], float(meta.get("sign", 1.0)) *
                                 torch.as_tensor(direction.vector))
    return tuned


def tuned_directions(generator: Any, encoder: Any, vectors: torch.Tensor, crops: np.ndarray,
                     points: np.ndarray) -> list:
    """The tuned warps' directions (``vectors`` [K,L,512], one per :data:`WARPS` kind; the
    extra edits such as eyes_open = −eyes_closed added), each with its calibrated scale
    measured on :data:`CALIBRATION_FRAMES` of ``crops`` [N,S,S,3] / ``points`` [N,468+,2],
    evenly spread (:func:`~vidinv.personalize.calibrate.action_response`)."""
    from vidinv.latent.directions import Direction, generator_fingerprint
    from vidinv.personalize.calibrate import CANDIDATE_SCALES, action_response, calibrated_scale
    from vidinv.personalize.tune import tuned_kinds

    generator = generator.cpu().eval()
    fingerprint = generator_fingerprint(generator)
    pick = np.linspace(0, len(crops) - 1, min(CALIBRATION_FRAMES, len(crops))).round()
    responses = action_response(generator, encoder, crops[pick.astype(int)],
                                points[pick.astype(int)], vectors)
    found = []
    for n, kind in enumerate(WARPS):
        if kind not in tuned_kinds():   # not taught (tune.KIND_WEIGHT 0): no direction
            continue
        name, sign = EDIT_OF_WARP[kind]
        response = responses.get(kind)
        measured = {} if response is None else {"action_response": {
            "scales": [round(c, 4) for c in CANDIDATE_SCALES],
            "strength_2": [round(two, 3) for two, _ in response.rows],
            "strength_3": [round(three, 3) for _, three in response.rows],
            "growth": round(response.growth, 3)}}
        found.append(Direction(
            name=name, vector=sign * vectors[n], kind="tuned-warp",
            scale=calibrated_scale(response), strength_range=(-3.0, 3.0),
            generator_fingerprint=fingerprint,
            meta={"source": "vidinv personalize", "warp": kind, "sign": sign, **measured,
                  "strength_3_equals": f"as far as the model's {kind} goes while it still "
                  "grows from strength 2, at most the strongest warp of the training data "
                  "(calibrated)"}))
    for name, (kind, sign) in EXTRA_EDITS.items():   # eyes_open = −eyes_closed
        base = next(d for d in found if d.meta["warp"] == kind)
        found.append(replace(base, name=name, vector=sign * base.vector,
                             meta={**base.meta, "sign": sign}))
    return found


def _crop_size(resolution: int) -> int:
    """The encoder's input side: twice the generator's (16 × the 16×16 feature) up to 256."""
    return min(2 * resolution, 256)


class Personalizer:
    """Runs the steps of the module docstring for ``clip`` into ``out``."""

    def __init__(self, clip: str | Path, out: str | Path, settings: PersonalizeSettings,
                 progress: ProgressFn | None = None) -> None:
        self.clip = Path(clip)
        self.out = Path(out)
        self.work = self.out / WORK_FOLDER
        self.settings = settings
        self.progress = progress or (lambda stage, done, total: None)
        self.device = torch.device(settings.device)
        self.last_directions: list = []
        self.started = time.monotonic()

    # --- 0. the run folder: what it was started with -----------------------------------------

    def run_inputs(self) -> dict[str, Any]:
        """What this run is made from: the clip (name, size, sha256), the settings that shape
        the model, and the fingerprint of the model it starts from."""
        import hashlib

        digest = hashlib.sha256()
        with open(self.clip, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        settings = {key: value for key, value in asdict(self.settings).items()
                    if key not in RESUMABLE_WITH_OTHER}
        init = self._init_folder()
        return json.loads(json.dumps({
            "clip": {"name": self.clip.name, "size": self.clip.stat().st_size,
                     "sha256": digest.hexdigest()},
            "settings": settings,
            "init_fingerprint": folder_fingerprint(init) if init is not None
            and is_model_folder(init) else None}))  # tuples as lists, as read back

    def claim_work_folder(self) -> None:
        """Start the run folder with its ``inputs.json``, or check that a stopped run's folder
        was made from this clip with these settings (:class:`ResumeMismatchError` if not)."""
        from vidinv.io_safety import write_atomically

        wanted = self.run_inputs()
        path = self.work / INPUTS_FILE
        restart = "pass --restart to discard it and start over, or choose a new -o folder"
        if not self.work.exists():
            self.work.mkdir(parents=True)
            write_atomically(path, json.dumps(wanted, indent=2) + "\n")
            return
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(recorded, dict):
                raise ValueError
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            raise ResumeMismatchError(
                f"{self.out}: holds a stopped personalize run with no readable record of its "
                f"clip and settings ({WORK_FOLDER}/{INPUTS_FILE}); {restart}") from None
        if recorded.get("clip") != wanted["clip"]:
            old = recorded.get("clip") or {}
            same_name = old.get("name") == self.clip.name
            raise ResumeMismatchError(
                f"{self.out}: holds a stopped personalize run of another clip "
                f"({old.get('name')!r}{', other content' if same_name else ''}); continue it "
                f"with that clip, or {restart}")
        for key in sorted(set(recorded.get("settings") or {}) | set(wanted["settings"])):
            before = (recorded.get("settings") or {}).get(key)
            after = wanted["settings"].get(key)
            if before != after:
                raise ResumeMismatchError(
                    f"{self.out}: holds a stopped personalize run started with other settings "
                    f"({key} {before} → {after}); run it with the same settings to continue, "
                    f"or {restart}")
        if recorded.get("init_fingerprint") != wanted["init_fingerprint"]:
            raise ResumeMismatchError(
                f"{self.out}: holds a stopped personalize run started from another --init "
                f"model (its weights differ); {restart}")

    # --- 1. data ----------------------------------------------------------------------------

    def data(self) -> dict[str, np.ndarray]:
        path = self.work / "data.npz"
        if path.is_file():
            with np.load(path) as archive:
                return {name: archive[name] for name in archive.files}
        from vidinv.face.identities import parse_face_choice
        from vidinv.personalize.data import collect_faces, expression_set

        start = time.monotonic()
        settings = self.settings
        heldout = (range(settings.heldout[0], settings.heldout[1] + 1)
                   if settings.heldout else None)
        self.progress("align", 0, 1)
        choice = parse_face_choice(settings.face, settings.face_reference)
        faces = collect_faces(self.clip, _crop_size(settings.resolution), heldout, choice)
        train_crops, train_points = faces.train
        images, labels = expression_set(train_crops, train_points, settings.warp_copies,
                                        settings.seed)
        from vidinv.personalize.tune import expression_bank

        bank = expression_bank(train_crops, train_points, settings.resolution)
        arrays = {**bank, "images": images, "labels": np.array(labels), "train_crops": train_crops,
                  "train_points": train_points, "heldout_crops": faces.crops[faces.heldout],
                  "heldout_indices": faces.indices[faces.heldout],
                  "frame_count": np.array(faces.frame_count)}
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        self._note("data", StepRecord(seconds=time.monotonic() - start, extra={
            "frames": int(faces.frame_count), "face_frames": int(len(faces.crops)),
            "train_crops": int(len(train_crops)), "heldout_crops": int(faces.heldout.sum()),
            "training_images": int(len(images))}))
        return arrays

    # --- 2. generator -----------------------------------------------------------------------

    def _init_folder(self) -> Path | None:
        init = self.settings.init
        if init == "none":
            return None
        return DEFAULT_MODEL_FOLDER if init == "default" else Path(init)

    def generator(self, data: dict[str, np.ndarray]) -> Any:
        from vidinv.models.generator_io import load_generator
        from vidinv.train.gan import GanTrainConfig, GanTrainer

        run = self.work / "gan"
        done = run / "done.json"
        if done.is_file():
            return load_generator(run / GENERATOR_FILE)
        if self.settings.share("generator") == 0:
            return load_generator(self._untrained_init("generator", GENERATOR_FILE))
        resolution = self.settings.resolution
        images = torch.from_numpy(_resize(data["images"], resolution)).permute(0, 3, 1, 2)
        images = images.contiguous()
        if (run / TRAINING_STATE_FILE).is_file():
            trainer = GanTrainer.from_checkpoint(run, images, device=self.device)
        else:
            channel_max, multiplier = GENERATOR_SHAPES[resolution]
            config = GanTrainConfig(resolution=resolution, channel_max=channel_max,
                                    channel_multiplier=multiplier, batch=8,
                                    checkpoint_every=100, sample_every=500, log_every=10,
                                    seed=self.settings.seed,
                                    # Starting from a trained G: short EMA, no ramp-up needed.
                                    ema_kimg=2.0)
            trainer = GanTrainer(config, images, out_dir=run, device=self.device)
            if self._warm_start("generator", GENERATOR_FILE, load_generator,
                                [trainer.G, trainer.G_ema]):
                trainer.set_lr(FINE_TUNE_GAN_LR)
        self._train_for_budget("generator", trainer)
        trainer.save_checkpoint()
        done.write_text(json.dumps({"steps": trainer.step}))
        # From the file, as a resumed run would: a fresh run and a resumed one continue from
        # the same network (and nothing of the trainer's in-memory state leaks on).
        return load_generator(run / GENERATOR_FILE)

    def _untrained_init(self, stage: str, file_name: str) -> Path:
        """The init model's file for a stage that ``--split`` gives no time."""
        folder = self._init_folder()
        if folder is None:
            raise VidinvError(f"--split gives the {stage} no time and --init is none: there is "
                              f"no {stage} to start from")
        self._note_extra(stage, init=f"{folder.name} (not trained here)")
        return folder / file_name

    def _warm_start(self, stage: str, file_name: str, load: Callable[[Path], Any],
                    targets: list[Any]) -> bool:
        """Copy the init model's network into ``targets`` (modules of the same architecture)
        when it has exactly their parameters and shapes; records where the stage started."""
        folder = self._init_folder()
        if folder is None or not (folder / file_name).is_file():
            self._note_extra(stage, init="none (from scratch)")
            return False
        state = load(folder / file_name).state_dict()
        target = targets[0].state_dict()
        if set(state) != set(target) or any(state[k].shape != target[k].shape for k in state):
            self._note_extra(stage, init=f"none ({folder.name} has another shape)")
            return False
        for module in targets:
            module.load_state_dict(state)
        self._note_extra(stage, init=str(folder.name))
        return True

    # --- 3. encoder -------------------------------------------------------------------------

    def encoder(self, generator: Any, data: dict[str, np.ndarray]) -> Any:
        from vidinv.models.encoder import FeatureStyleEncoder
        from vidinv.models.encoder_io import load_encoder
        from vidinv.train.encoder import (
            EncoderTrainer,
            EncoderTrainingConfig,
            TensorImageSource,
        )

        run = self.work / "encoder"
        done = run / "done.json"
        if done.is_file():
            return load_encoder(run / ENCODER_FILE)
        if self.settings.share("encoder") == 0:
            encoder = load_encoder(self._untrained_init("encoder", ENCODER_FILE))
            encoder.set_latent_avg(generator.latent_avg)
            return encoder
        generator = generator.to(self.device)
        crop = _crop_size(self.settings.resolution)
        reals = TensorImageSource(_to_unit(data["images"]), generator.resolution)
        if (run / TRAINING_STATE_FILE).is_file():
            trainer = EncoderTrainer.resume(generator, run, real_images=reals)
        else:
            config = EncoderTrainingConfig(batch_size=4, lr=3e-4, feature_ramp_rate=2.5e-3,
                                           checkpoint_every=100, log_every=20,
                                           seed=self.settings.seed)
            channels, side, _ = generator.synthesis.feature_shape(FEATURE_INDEX)
            encoder = FeatureStyleEncoder(
                n_latent=generator.n_latent, style_dim=generator.style_dim, input_size=crop,
                widths=ENCODER_WIDTHS, blocks=ENCODER_BLOCKS, feature_channels=channels,
                content_stride=crop // (8 * side))
            self._warm_start("encoder", ENCODER_FILE, load_encoder, [encoder])
            encoder.set_latent_avg(generator.latent_avg)
            trainer = EncoderTrainer(generator, encoder, config, real_images=reals,
                                     out_dir=run)
        def decay_lr_once(fraction: float) -> None:
            # The paper's lr step (÷10) at 80 % of the run, placed by time instead of steps.
            if fraction >= LR_DECAY_AT and trainer.config.lr_decay_step > trainer.step:
                trainer.config = replace(trainer.config, lr_decay_step=max(1, trainer.step))

        self._train_for_budget("encoder", trainer, decay_lr_once)
        trainer.save_checkpoint()
        done.write_text(json.dumps({"steps": trainer.step}))
        return load_encoder(run / ENCODER_FILE)

    # --- 4. directions ----------------------------------------------------------------------

    def paired_directions(self, encoder: Any, data: dict[str, np.ndarray]
                          ) -> tuple[torch.Tensor, list[float]]:
        """[K,L,512]: per warp kind, the mean over training crops of E(warp(x, strongest))
        − E(x) (the tuning's starting point), and how well single pairs agree with it."""
        from vidinv.face.expressions import AMOUNT_RANGE
        from vidinv.models.encoder import prepare_input
        from vidinv.personalize.warps import warp_face

        encoder = encoder.cpu().eval()
        crops, points = data["train_crops"], data["train_points"]
        pick = np.linspace(0, len(crops) - 1, min(DIRECTION_FRAMES, len(crops))).round()
        pick = pick.astype(int)

        def codes(images: list[np.ndarray]) -> torch.Tensor:
            with torch.no_grad():
                w, _ = encoder(prepare_input(_to_unit(np.stack(images)), encoder.input_size))
            return w

        base = codes([crops[i] for i in pick])
        vectors, agreement = [], []
        for kind in WARPS:
            high = AMOUNT_RANGE[kind][1]
            change = codes([warp_face(crops[i], points[i], kind, high) for i in pick]) - base
            mean = change.mean(0)
            vectors.append(mean)
            agreement.append(float(torch.nn.functional.cosine_similarity(
                change.flatten(1), mean.flatten()[None]).mean()))
        return torch.stack(vectors), agreement

    # --- 4. expression tuning ---------------------------------------------------------------

    def tune(self, generator: Any, encoder: Any, data: dict[str, np.ndarray]
             ) -> tuple[Any, torch.Tensor]:
        """(tuned generator, tuned directions [K,L,512]); see :mod:`vidinv.personalize.tune`."""
        from vidinv.models.encoder import prepare_input
        from vidinv.personalize.tune import ExpressionTuner, TuneConfig
        from vidinv.train.state import load_state, save_state

        run = self.work / "tune"
        state_file = run / "state.safetensors"
        initial, agreement = self.paired_directions(encoder, data)
        self._note_extra("tune", paired_agreement=dict(zip(WARPS, agreement, strict=True)))
        continued = self._continue_init_directions(initial)
        if continued:
            self._note_extra("tune", directions_from_init=continued)
        with torch.no_grad():
            w, features = encoder.cpu().eval()(prepare_input(_to_unit(data["train_crops"]),
                                                             encoder.input_size))
        small = _resize(data["train_crops"], self.settings.resolution)
        tuner = ExpressionTuner(generator, w, features, small, data, initial,
                                TuneConfig(seed=self.settings.seed), device=self.device)
        if state_file.is_file():
            tuner.load(load_state(state_file))

        class _Checkpointing:
            """The tuner, checkpointed after every chunk (for :meth:`_train_for_budget`)."""

            step = property(lambda _: tuner.step)

            def train(self, steps: int) -> None:
                try:
                    tuner.train(steps)
                finally:
                    run.mkdir(parents=True, exist_ok=True)
                    save_state(state_file, tuner.state())

        self._train_for_budget("tune", _Checkpointing())
        return tuner.generator.eval().requires_grad_(False), tuner.directions.detach().cpu()

    def _continue_init_directions(self, initial: torch.Tensor) -> list[str]:
        """Start each kind's direction in ``initial`` [K,L,512] (changed in place) from the
        init model's tuned one when the generator was warm-started from that model: its
        generator was tuned together with those directions, so the paired-code means (made for
        an untuned latent space) would throw that tuning away for the first thousand steps.
        Returns the kinds continued (none with ``--init none`` or a generator trained here)."""
        folder = self._init_folder()
        if folder is None or self.settings.share("generator") > 0:
            return []
        tuned = stored_tuned_vectors(folder)
        continued = []
        for n, kind in enumerate(WARPS):
            vector = tuned.get(kind)
            if vector is not None and tuple(vector.shape) == tuple(initial[n].shape):
                initial[n] = vector.to(initial.dtype)
                continued.append(kind)
        return continued

    def directions(self, generator: Any, encoder: Any, vectors: torch.Tensor,
                   data: dict[str, np.ndarray]) -> list:
        """The tuned edit directions, each scaled so that strength 3 goes as far as the model's
        edit does while it still grows from 2 (:mod:`vidinv.personalize.calibrate`), plus
        SeFa."""
        from vidinv.latent.fit import sefa_directions

        start = time.monotonic()
        self.progress("directions", 0, 1)
        found = tuned_directions(generator, encoder, vectors, data["train_crops"],
                                 data["train_points"])
        sefa = sefa_directions(generator.cpu().eval(), k=SEFA_COMPONENTS)
        self._note("directions", StepRecord(seconds=time.monotonic() - start, extra={
            f"{d.name} scale": round(d.scale, 3) for d in found}))
        self.progress("directions", 1, 1)
        return [*found, *sefa]

    # --- 5. package -------------------------------------------------------------------------

    def package(self, generator: Any, encoder: Any, directions: list,
                evaluation: dict[str, Any], data: dict[str, np.ndarray]) -> None:
        """Write the model folder: networks, card, directions and, where the clip shows the
        person's teeth (:func:`~vidinv.face.appearance.find_mouth_inside` on the training
        crops), their open mouth for the transfer paste to draw a smile's teeth with (where it
        does not, one an earlier build left in the folder is removed)."""
        from vidinv.face.appearance import find_mouth_inside
        from vidinv.latent.directions import DirectionSet, save_directions
        from vidinv.personalize.card import model_card

        summary = self.summary(evaluation)
        save_model_folder(self.out, generator, encoder, card=model_card(summary),
                          evaluation=summary)
        inside = find_mouth_inside(data["train_crops"], data["train_points"])
        save_mouth_inside(self.out, None if inside is None else inside.image)
        for direction in directions:
            if direction.kind != "sefa":
                save_directions(direction_file(self.out, direction.name), direction)
        sefa = [d for d in directions if d.kind == "sefa"]
        if sefa:
            save_directions(direction_file(self.out, "sefa"), DirectionSet(sefa))
        write_manifest(self.out)  # now with the directions

    def summary(self, evaluation: dict[str, Any]) -> dict[str, Any]:
        records = _load_records(self.work)
        return {"clip": self.clip.name, "settings": asdict(self.settings),
                "steps": {name: asdict(record) for name, record in records.items()},
                "wall_minutes": sum(r.seconds for r in records.values()) / 60,
                "evaluation": evaluation}

    # --- the whole run ----------------------------------------------------------------------

    def run(self, evaluate: Callable[[Any, Any, dict[str, np.ndarray]], dict] | None = None
            ) -> Path:
        torch.set_num_threads(self.settings.threads)
        self.claim_work_folder()
        data = self.data()
        generator = self.generator(data)
        encoder = self.encoder(generator, data)
        generator, vectors = self.tune(generator, encoder, data)
        directions = self.directions(generator, encoder, vectors, data)
        self.last_directions = directions
        evaluation = evaluate(generator, encoder, data) if evaluate is not None else {}
        self.package(generator, encoder, directions, evaluation, data)
        return self.out

    # --- helpers ----------------------------------------------------------------------------

    def _train_for_budget(self, stage: str, trainer: Any,
                          on_chunk: Callable[[float], None] | None = None) -> None:
        """Train in chunks of about :data:`CHUNK_SECONDS` until the stage's share of the
        budget is spent (the first chunk is one step, to time a step).

        The seconds spent are stored after every chunk, so a resumed run (after Ctrl-C, which
        makes the trainer checkpoint and raise) only spends what is left.
        """
        budget = self.settings.minutes * 60 * self.settings.share(stage)
        record = self._records().get(stage, StepRecord())
        quiet = [logging.getLogger("vidinv.train.gan"), logging.getLogger("vidinv.train.encoder")]
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        chunk = 1
        try:
            while record.seconds < budget:
                started = time.monotonic()
                if on_chunk is not None:
                    on_chunk(record.seconds / budget)
                try:
                    trainer.train(chunk)
                finally:
                    spent = time.monotonic() - started
                    left = budget - record.seconds - spent
                    chunk = max(1, int(min(CHUNK_SECONDS, left) / max(spent / chunk, 1e-3)))
                    record.seconds += spent
                    record.steps = trainer.step
                    self._note(stage, record)
                self.progress(stage, int(min(record.seconds, budget)), int(budget))
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)

    def _records(self) -> dict[str, StepRecord]:
        return _load_records(self.work)

    def _note(self, stage: str, record: StepRecord) -> None:
        records = self._records()
        old = records.get(stage)
        if old is not None:
            record.extra = {**old.extra, **record.extra}
        records[stage] = record
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "records.json").write_text(json.dumps(
            {name: asdict(r) for name, r in records.items()}, indent=2))

    def _note_extra(self, stage: str, **extra: Any) -> None:
        records = self._records()
        record = records.get(stage, StepRecord())
        record.extra.update(extra)
        self._note(stage, record)


def _load_records(work: Path) -> dict[str, StepRecord]:
    path = work / "records.json"
    if not path.is_file():
        return {}
    return {name: StepRecord(**value) for name, value in json.loads(path.read_text()).items()}


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """[N,S,S,3] uint8 -> [N,size,size,3] uint8 (area downsampling)."""
    import cv2

    if images.shape[1] == size:
        return images
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
                     for image in images])


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """[N,S,S,3] uint8 -> [N,3,S,S] float32 in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def remove_work_folder(out: Path) -> None:
    """Delete the resumable training state once the model is packaged (``--keep-work`` keeps
    it)."""
    shutil.rmtree(out / WORK_FOLDER, ignore_errors=True)
