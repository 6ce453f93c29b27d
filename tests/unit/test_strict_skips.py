"""Under make test a skipped test fails (with its reason); outside it, skips stay skips."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_needs_a_tool():
    pytest.skip("iperf3 is not installed")

@pytest.mark.skipif(True, reason="not root")
def test_needs_root():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_fine():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("from strict_skips import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_with_arctic_no_skips_every_skip_fails_and_says_why(suite, monkeypatch):
    monkeypatch.setenv("ARCTIC_NO_SKIPS", "1")
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)  # a skip at set-up (skipif) is an error
    result.stdout.fnmatch_lines(["*allows no skips*not root*", "*allows no skips*iperf3 is not installed*"])


def test_without_it_skips_stay_skips(suite, monkeypatch):
    monkeypatch.delenv("ARCTIC_NO_SKIPS", raising=False)
    suite.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2, xfailed=1)
