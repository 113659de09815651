"""The CI rule of tests/conftest.py: a missing required package skips locally, fails under CI.

Each case runs pytest in a subprocess on a small generated test file, with this suite's
conftest loaded as a plugin, once with ``CI=true`` and once without ``CI``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "vidinv_test_module_that_is_not_installed"

CASES = f'''
import pytest

from tests.skips import machine_skip, needed, require


def test_require_a_missing_package():
    require("{MISSING}")


def test_importorskip_a_missing_package():
    pytest.importorskip("{MISSING}")


def test_a_missing_file():
    needed(False, "the real clip")


def test_a_plain_skip():
    pytest.skip("no chromium")


def test_a_machine_skip():
    machine_skip("this machine has a video device")


@pytest.mark.gpu
def test_a_gpu_test_without_cuda():
    pytest.skip("needs CUDA")


def test_a_present_package():
    assert require("json").dumps(1) == "1"
'''

MODULE_LEVEL = f'''
from tests.skips import require

require("{MISSING}")


def test_never_collected():
    pass
'''


def _outcomes(tmp_path: Path, ci: bool) -> dict[str, str]:
    """Run the generated files; test name (or file, for collection) -> passed/skipped/failed."""
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)
    report = tmp_path / f"report_ci_{ci}.xml"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-q", "--continue-on-collection-errors", "-o", "markers=gpu: needs CUDA",
         f"--junitxml={report}", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert report.is_file(), result.stdout + result.stderr
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("name") or case.get("classname")
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[name] = ("failed" if kinds & {"failure", "error"}
                          else "skipped" if kinds else "passed")
    assert (result.returncode != 0) == ("failed" in outcomes.values()), result.stdout
    return outcomes


@pytest.mark.parametrize("ci", [False, True], ids=["local", "CI=true"])
def test_missing_required_parts_skip_locally_and_fail_under_ci(tmp_path: Path, ci: bool) -> None:
    outcomes = _outcomes(tmp_path, ci)
    missing = "failed" if ci else "skipped"
    module_level = {name: kind for name, kind in outcomes.items() if "module_level" in name}
    assert list(module_level.values()) == [missing], outcomes
    assert {name: kind for name, kind in outcomes.items() if name not in module_level} == {
        "test_require_a_missing_package": missing,
        "test_importorskip_a_missing_package": missing,
        "test_a_missing_file": missing,
        "test_a_plain_skip": missing,
        "test_a_machine_skip": "skipped",
        "test_a_gpu_test_without_cuda": "skipped",
        "test_a_present_package": "passed",
    }


def _readme_browser_prelude() -> str:
    """The README test command's first part: the chromium install, before the venv is made."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("<!-- test-command -->")
    assert lines[start + 1] == "```" and lines[start + 3] == "```"  # one line, as .ci/run reads
    prelude, separator, _ = lines[start + 2].partition(" && python3 -m venv .venv")
    assert separator, lines[start + 2]
    return prelude


@pytest.mark.parametrize("ci", [False, True], ids=["local", "CI=true"])
def test_readme_command_without_chromium_goes_on_locally_and_stops_under_ci(
        tmp_path: Path, ci: bool) -> None:
    bin_dir = tmp_path / "bin"  # no chromium, and an apt-get that cannot install it
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text("#!/bin/sh\necho \"apt-get $*\" >> \"$APT_LOG\"\nexit 100\n")
    apt_get.chmod(0o755)
    env = {"PATH": str(bin_dir), "APT_LOG": str(tmp_path / "apt.log")}
    if ci:
        env["CI"] = "true"
    bash = "/bin/bash"
    result = subprocess.run([bash, "-c", _readme_browser_prelude() + " && echo GOES_ON"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert "apt-get update" in (tmp_path / "apt.log").read_text()  # it tried to install
    if ci:
        assert result.returncode != 0 and "GOES_ON" not in result.stdout
        assert "chromium could not be installed" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "no chromium: the page's browser test will skip", "GOES_ON"]
