"""Under CI (``CI=true``) a skipped test is a failed one, unless the skip is about the machine.

See ``tests/skips.py`` for the rule and the helpers (``require``, ``needed``, ``missing``,
``machine_skip``).
Enforced here for every skip (``pytest.skip``, ``pytest.importorskip``, ``skipif`` marks, a
module that skips at import), so that a new test cannot bring back a silent skip in CI.

The run's vidinv cache (traced graphs, ONNX exports, engines) is a temporary folder, never the
user's ``~/.cache/vidinv`` (a test that needs its own sets ``VIDINV_CACHE`` itself).
"""

from __future__ import annotations

import os

import pytest

from tests.skips import MachineSkip, under_ci

_CI_RULE = ("under CI (CI=true) a skip for a missing package, file or program is a failure; "
            "install it, or use tests.skips.machine_skip / @pytest.mark.gpu if the skip is about "
            "the machine")


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return report
    if item.get_closest_marker("gpu") is not None:
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, MachineSkip):
        return report
    report.outcome = "failed"
    report.longrepr = f"skipped under CI: {_reason(report.longrepr)}\n({_CI_RULE})"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.skipped and under_ci():
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid} skipped under CI: {_reason(report.longrepr)}\n"
                           f"({_CI_RULE})")
    return report


@pytest.fixture(autouse=True, scope="session")
def _private_vidinv_cache(tmp_path_factory: pytest.TempPathFactory):
    previous = os.environ.get("VIDINV_CACHE")
    os.environ["VIDINV_CACHE"] = str(tmp_path_factory.mktemp("vidinv-cache"))
    yield
    if previous is None:
        os.environ.pop("VIDINV_CACHE", None)
    else:
        os.environ["VIDINV_CACHE"] = previous
