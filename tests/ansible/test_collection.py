"""The arctic.fleet collection passes ``ansible-test sanity`` and ``ansible-test units``.

Why a wrapper: ``make test`` runs pytest, and CI reads pytest's summary line. ansible-test has two
demands this wrapper meets:

* it only tests a tree at ``.../ansible_collections/<namespace>/<name>/`` and lists files through
  git, so the collection is copied to a temporary ``ansible_collections/arctic/fleet`` that is its own
  git repository (the work tree's other files and the agent's venv stay out of the way);
* it builds pinned, isolated virtualenvs for each sanity test and bootstraps pip in them with a script
  downloaded from a host we cannot reach; ``get_pip_offline.py`` stands in for it (pip from
  ``ensurepip`` + PyPI). The virtualenvs are cached under a dedicated HOME, so only the first run pays
  for creating them (about two minutes; later runs take about 25 s for sanity and 10 s for units).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "arctic" / "fleet"
PIP_SHIM = Path(__file__).with_name("get_pip_offline.py")
ANSIBLE_TEST = Path(sys.executable).with_name("ansible-test")
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# Where ansible-test keeps its virtualenvs between runs (it uses ~/.ansible/test, so HOME points here).
TEST_HOME = Path(os.environ.get("ARCTIC_ANSIBLE_TEST_HOME", Path.home() / ".cache" / "arctic" / "ansible-test-home"))
RUN_TIMEOUT = 900  # seconds; a cold run creates ~8 virtualenvs from PyPI

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(RUN_TIMEOUT + 60),
    pytest.mark.skipif(not ANSIBLE_TEST.exists(), reason="ansible-core (ansible-test) is not installed"),
]


def _pip_version_ansible_test_bootstraps() -> str:
    """The pip version whose get-pip script ansible-test looks for in its cache (24.2 for core 2.19)."""
    import ansible_test  # only importable where ansible-core is installed

    source = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    match = re.search(r"default_packages = dict\(\s*pip='([\d.]+)'", source)
    assert match, "ansible-test no longer pins pip the way this wrapper expects; update get_pip_offline.py"
    return match.group(1)


@pytest.fixture(scope="module")
def collection_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git-tracked copy of the collection at .../ansible_collections/arctic/fleet."""
    root = tmp_path_factory.mktemp("ansible-test") / "ansible_collections" / "arctic" / "fleet"
    shutil.copytree(
        COLLECTION,
        root,
        ignore=shutil.ignore_patterns("output", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache"),
    )
    for args in (["init", "-q", "."], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def ansible_test_env() -> dict:
    """Environment for ansible-test: dedicated HOME with the offline pip bootstrap in its cache."""
    cache = TEST_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    version = _pip_version_ansible_test_bootstraps()
    shutil.copyfile(PIP_SHIM, cache / f"get_pip_{version.replace('.', '_')}.py")
    env = dict(os.environ, HOME=str(TEST_HOME), ANSIBLE_TEST_PREFER_PODMAN="0")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)  # test the copy, never an installed collection
    return env


def run_ansible_test(tree: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [str(ANSIBLE_TEST), *args, "--python", PYTHON_VERSION, "--venv", "--requirements", "--color", "no"]
    return subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def report(proc: subprocess.CompletedProcess) -> str:
    """The part of ansible-test's output that explains a failure (pip chatter left out)."""
    lines = (proc.stdout + proc.stderr).splitlines()
    wanted = [line for line in lines if re.match(r"(ERROR|FATAL|Running|=+|FAILED|E )", line)]
    return "\n".join(wanted[-80:]) or "\n".join(lines[-80:])


def test_sanity_passes_with_only_the_licence_ignores(collection_tree: Path, ansible_test_env: dict):
    ignores = collection_tree / "tests" / "sanity" / f"ignore-{_core_minor()}.txt"
    if ignores.exists():
        entries = [line for line in ignores.read_text().splitlines() if line.strip()]
        assert all("validate-modules:missing-gplv3-license" in line for line in entries), entries

    proc = run_ansible_test(collection_tree, ansible_test_env, "sanity")

    assert proc.returncode == 0, report(proc)
    assert 'Running sanity test "validate-modules"' in proc.stdout
    assert 'Running sanity test "pylint"' in proc.stdout
    assert 'Running sanity test "changelog"' in proc.stdout  # antsibull-changelog lint of changelogs/


def test_unit_tests_pass_under_ansible_test(collection_tree: Path, ansible_test_env: dict):
    proc = run_ansible_test(collection_tree, ansible_test_env, "units")

    assert proc.returncode == 0, report(proc)
    passed = [int(n) for n in re.findall(r"=+ (\d+) passed", proc.stdout)]
    assert len(passed) == 2 and all(passed), report(proc)  # the module_utils and modules suites both ran


def _core_minor() -> str:
    from ansible.release import __version__

    return ".".join(__version__.split(".")[:2])
