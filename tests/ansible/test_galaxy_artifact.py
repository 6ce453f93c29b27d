"""The collection as Galaxy (or a private hub, or AWX) gets it: ``ansible-galaxy collection build``'s artifact.

Proves the built tarball carries the licence and a changelog made by antsibull-changelog (and that the changelog is
current: regenerating it from ``changelogs/changelog.yaml`` gives the shipped ``CHANGELOG.rst``), that its
``MANIFEST.json`` has complete metadata (repository, documentation, issues, authors, licence), and that the lab-only
pid-file supervisor is not in it: it lives with the lab (``tests/ansible/arctic-lab-service``) and the role's
``lab`` mode is told where it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "arctic" / "fleet"
BIN = Path(sys.executable).parent
GALAXY = BIN / "ansible-galaxy"
CHANGELOG_TOOL = BIN / "antsibull-changelog"
LAB_SUPERVISOR = REPO / "tests" / "ansible" / "arctic-lab-service"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes | None]:
    """Every member of the built tarball: name -> content (None for directories)."""
    if not GALAXY.exists():
        pytest.skip("ansible-core (ansible-galaxy) is not installed")
    out = tmp_path_factory.mktemp("galaxy")
    proc = subprocess.run([str(GALAXY), "collection", "build", str(COLLECTION), "--output-path", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out.glob("arctic-fleet-*.tar.gz")
    with tarfile.open(tarball) as archive:
        return {m.name: (archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()}


def test_the_artifact_carries_the_licence_and_the_changelog(artifact):
    for name in ("LICENSE", "CHANGELOG.rst", "changelogs/changelog.yaml", "changelogs/config.yaml"):
        assert artifact.get(name), f"{name} is missing from the built collection"
    assert b"Apache License" in artifact["LICENSE"] and b"Version 2.0, January 2004" in artifact["LICENSE"]
    files = {f["name"] for f in json.loads(artifact["FILES.json"])["files"]}
    assert {"LICENSE", "CHANGELOG.rst", "changelogs/changelog.yaml"} <= files  # checksummed like every file


def test_the_manifest_has_complete_galaxy_metadata(artifact):
    info = json.loads(artifact["MANIFEST.json"])["collection_info"]
    assert (info["namespace"], info["name"]) == ("arctic", "fleet")
    for key in ("repository", "documentation", "issues"):
        assert str(info.get(key) or "").startswith("https://"), f"galaxy.yml has no {key}"
    assert info["authors"] and all(author.strip() for author in info["authors"])
    assert info["license"] == ["Apache-2.0"]


def test_the_changelog_describes_the_version_being_built(artifact):
    changelog = yaml.safe_load(artifact["changelogs/changelog.yaml"])
    version = json.loads(artifact["MANIFEST.json"])["collection_info"]["version"]
    assert version in changelog["releases"], f"changelogs/changelog.yaml has no release {version}"
    assert changelog["releases"][version]["changes"]["release_summary"]
    assert f"v{version}" in artifact["CHANGELOG.rst"].decode()


@pytest.mark.skipif(not CHANGELOG_TOOL.exists(), reason="antsibull-changelog is not installed (test extras)")
def test_the_shipped_changelog_is_what_antsibull_changelog_generates_and_its_fragments_lint(tmp_path):
    copy = tmp_path / "ansible_collections" / "arctic" / "fleet"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("tests", "__pycache__", ".ruff_cache"))
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_COLLECTIONS_PATH": str(tmp_path)}
    for args in (["lint"], ["lint-changelog-yaml", "changelogs/changelog.yaml"], ["generate"]):
        proc = subprocess.run([str(CHANGELOG_TOOL), *args], cwd=copy, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 0 and not proc.stdout.strip(), f"antsibull-changelog {args}: {said}"
    assert (copy / "CHANGELOG.rst").read_text() == (COLLECTION / "CHANGELOG.rst").read_text(), (
        "CHANGELOG.rst is out of date: run 'antsibull-changelog generate' in the collection")


def test_the_lab_only_supervisor_is_not_shipped_and_the_lab_provides_it(artifact):
    assert not [name for name in artifact if "arctic-lab-service" in name or name.startswith("roles/agent/files")]
    assert not [name for name, body in artifact.items() if body and b"setsid" in body]  # no copy under another name
    assert LAB_SUPERVISOR.is_file() and LAB_SUPERVISOR.stat().st_mode & 0o111
    role_task = yaml.safe_load(artifact["roles/agent/tasks/service_lab.yml"])
    copied = next(t for t in role_task if "ansible.builtin.copy" in t)
    assert copied["ansible.builtin.copy"]["src"] == "{{ arctic_agent_lab_supervisor }}"
    lab_vars = yaml.safe_load((REPO / "playbooks/inventories/lab/group_vars/arctic_agents.yml").read_text())
    assert lab_vars["arctic_agent_lab_supervisor"] == "{{ arctic_lab.repo }}/tests/ansible/arctic-lab-service"
