"""MODEL_CARD.md of a personal model, from the build's summary (``evaluation.json``)."""

from __future__ import annotations

from typing import Any


def _row(name: str, value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return f"| {name} | {value}{unit} |"


def model_card(summary: dict[str, Any]) -> str:
    """The card's Markdown: data, steps, wall time, measured results."""
    settings = summary["settings"]
    steps = summary["steps"]
    data = steps.get("data", {}).get("extra", {})
    evaluation = summary.get("evaluation", {})
    lines = [
        f"# Personal model for `{summary['clip']}`",
        "",
        "Built by `vidinv personalize` on this machine: a StyleGAN2 generator and a "
        "Feature-Style Encoder trained on the clip's own aligned frames, plus landmark-guided "
        "expression warps of them built on facial action units (smile = AU12 + AU6, with AU25 "
        "teeth and deeper nasolabial folds from strength 2; frown = AU15 + AU4; brows_raised "
        "AU1+2; eyes_closed AU43; eyes_wide AU5; mouth_open AU26/27; pout AU18; gaze; head "
        "yaw, pitch, roll) so that those edits exist in the model. It knows this one face; "
        "other faces are rendered as this person (the edit's motion still transfers in the "
        "default paste mode).",
        "",
        "## Data",
        "| what | count |",
        "|---|---|",
        _row("frames in the clip", data.get("frames")),
        _row("frames with a face", data.get("face_frames")),
        _row("training crops / held-out crops",
             f"{data.get('train_crops')} / {data.get('heldout_crops')}"),
        _row("training images (crops, jitter, expression warps)", data.get("training_images")),
        "",
        "## Training",
        "| step | steps | wall time | started from |",
        "|---|---|---|---|",
    ]
    for name in ("generator", "encoder", "tune"):
        record = steps.get(name, {})
        lines.append(f"| {name} | {record.get('steps', 0)} | "
                     f"{record.get('seconds', 0) / 60:.1f} min | "
                     f"{record.get('extra', {}).get('init', '—')} |")
    directions = steps.get("directions", {})
    agreement = steps.get("tune", {}).get("extra", {}).get("paired_agreement", {})
    continued = steps.get("tune", {}).get("extra", {}).get("directions_from_init", [])
    start = ("Each direction started as the mean change of the encoder's W+ code under that "
             "warp (agreement of single pairs with that mean, cosine: "
             + ", ".join(f"{k} {v:.2f}" for k, v in agreement.items()) + ")")
    if continued:
        start += (f"; {', '.join(continued)} continued instead from the init model's tuned "
                  "directions, with whose generator they had been tuned")
    lines += [
        f"| directions (tuned warps + SeFa) | — | {directions.get('seconds', 0) / 60:.1f} min "
        "| — |",
        "",
        f"Settings: resolution {settings['resolution']} px, budget {settings['minutes']} min, "
        f"device {settings['device']}, held-out frames {settings['heldout']}. Total wall time "
        f"{summary['wall_minutes']:.1f} min.",
        "",
        "Tuning (`tune`): the generator and the expression directions (all but roll, which is "
        "not tuned: tune.KIND_WEIGHT) were optimised together so that the pipeline's own edit "
        "(w + α/3 · d with the feature correction of Eq. 1) renders the landmark-guided warps "
        "of the training crops, strength 3 being the strongest warp, while the unedited codes "
        "still render the crops. " + start + ". `eyes_open` is the negative of closing the "
        "eyes.",
    ]
    from vidinv.face.expressions import MEANING

    lines += ["", "## What the strengths mean", "Strength 3 is the full expression of the "
              "training warps, or as far toward it as the model's edit still grows (each "
              "direction's scale is calibrated so: vidinv/personalize/calibrate.py); 1 and 2 "
              "are graded amounts of it.", "",
              "| attribute | strength 1 / 2 / 3 |", "|---|---|"]
    from vidinv.personalize.tune import tuned_kinds

    taught = set(tuned_kinds()) | {"eyes_open"}
    lines += [f"| {name} | {text} |" for name, text in MEANING.items() if name in taught]
    if evaluation:
        lines += ["", "## Measured on the held-out frames", "| metric | value |", "|---|---|"]
        for name, value in evaluation.items():
            if isinstance(value, dict):
                value = " / ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
                                   for k, v in value.items())
            lines.append(_row(name.replace("_", " "), value))
    return "\n".join(lines) + "\n"
