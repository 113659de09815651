"""Attributes of a model: the directions stored with it, a name or a direction file turned into
an editor, and the ``--attr NAME[=STRENGTH]`` values of the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from vidinv.latent.errors import UnknownAttributeError
from vidinv.models.folder import ModelBundle


def available_attributes(bundle: ModelBundle) -> dict[str, Path]:
    """Direction name -> file, for the directions stored with the model."""
    from vidinv.latent.directions import list_directions

    if not bundle.directions_folder.is_dir():
        return {}
    names: dict[str, Path] = {}
    for direction_set in list_directions(bundle.directions_folder):
        for direction in direction_set:
            names.setdefault(direction.name, direction_set.source or bundle.directions_folder)
    return names


def _load_attribute(bundle: ModelBundle, attribute: str, known: dict[str, Path]):
    """The :class:`~vidinv.latent.directions.Direction` for a name of the model or a file."""
    from vidinv.latent.directions import load_direction

    if attribute in known:
        return load_direction(known[attribute], attribute, bundle.generator)
    if Path(attribute).is_file():
        return load_direction(attribute, None, bundle.generator)
    listed = ", ".join(sorted(known)) or "none stored with this model"
    raise UnknownAttributeError(f"unknown attribute {attribute!r}; this model has: {listed} "
                                "(or pass a direction file)")


def resolve_editor(bundle: ModelBundle, attribute: str, strength: float,
                   layers: tuple[int, int] | None = None):
    """A :class:`~vidinv.latent.editing.LatentEditor` for ``attribute`` (a name or a file)."""
    from vidinv.latent.editing import LatentEditor

    layer_range = None if layers is None else range(layers[0], layers[1] + 1)
    direction = _load_attribute(bundle, attribute, available_attributes(bundle))
    # load_direction has already checked the direction against the generator (a hash over
    # every weight); the editor need not hash them again.
    if layer_range is None:
        return LatentEditor(bundle.generator, direction, strength, k=bundle.k, check=False)
    return LatentEditor(bundle.generator, direction, strength, layers=layer_range, k=bundle.k,
                        check=False)


def resolve_edits(bundle: ModelBundle, edits: Mapping[str, float],
                  extra: Sequence[str] = ()):
    """A :class:`~vidinv.latent.editing.CombinedEditor` for ``{attribute: strength}``.

    Attributes are names of the model's directions or direction files; each moves its own
    layers. ``extra`` names attributes to hold at strength 0 (e.g. for ``live``'s keys to
    reach). The directions are summed before one render: three edits cost what one does.
    """
    from vidinv.latent.editing import CombinedEditor

    known = available_attributes(bundle)
    names = list(edits) + [name for name in extra if name not in edits]
    if not names:
        raise UnknownAttributeError("no attribute to edit; this model has: "
                                    + (", ".join(sorted(known)) or "none"))
    directions = {name: _load_attribute(bundle, name, known) for name in names}
    return CombinedEditor.from_directions(bundle.generator, directions, dict(edits), k=bundle.k,
                                          check=False)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_edits(items: Sequence[str], default_strength: float = 1.0) -> dict[str, float]:
    """``["smile=2", "yaw=-1", "mouth_open"]`` -> ``{"smile": 2.0, "yaw": -1.0,
    "mouth_open": default_strength}`` (``--attr`` values of the command line)."""
    edits: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or (Path(item).is_file() and not _is_number(value)):
            name, strength = item, float(default_strength)
        else:
            try:
                strength = float(value)
            except ValueError:
                raise UnknownAttributeError(f"--attr {item}: the strength after '=' must be a "
                                            "number, e.g. --attr smile=2") from None
        if not name:
            raise UnknownAttributeError(f"--attr {item}: name the attribute, e.g. smile=2")
        if name in edits:
            raise UnknownAttributeError(f"--attr {name} is given twice; give each attribute "
                                        "once")
        from vidinv.latent.editing import check_strength

        edits[name] = check_strength(strength)
    return edits
