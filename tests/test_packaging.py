"""The plugin is found by twistd and ships in the wheel without a twisted/plugins/__init__.py."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import TWISTD

ROOT = Path(__file__).resolve().parents[1]


def test_twistd_lists_the_aiwg_plugin(tmp_path: Path) -> None:
    result = subprocess.run([TWISTD, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert any(line.split()[:1] == ["aiwg"] for line in result.stdout.splitlines())
    plugin_help = subprocess.run([TWISTD, "aiwg", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert plugin_help.returncode == 0 and "--project" in plugin_help.stdout and "--config" in plugin_help.stdout


def test_no_init_file_hides_twisteds_own_plugins() -> None:
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_wheel_contains_plugin_schema_and_console_script(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True, timeout=300, text=True,
    )
    # A clean build says nothing deprecated (license table, classifiers, editable modes).
    assert "Warning" not in built.stdout + built.stderr, built.stdout + built.stderr
    [wheel] = tmp_path.glob("aiwg_daemon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/aiwg_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    assert "aiwg/core/daemon.schema.json" in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    ).decode()
    assert "aiwg = aiwg.cli:main" in entry_points


def test_the_oldest_constraints_are_the_declared_lower_bounds() -> None:
    import runpy

    generate = runpy.run_path(str(ROOT / "constraints" / "generate.py"))
    assert (ROOT / "constraints" / "oldest.txt").read_text() == generate["render"](), (
        "constraints/oldest.txt is out of date: run `make constraints`")


def test_every_dependency_declares_a_tested_lower_bound() -> None:
    import runpy

    generate = runpy.run_path(str(ROOT / "constraints" / "generate.py"))
    pins = generate["lower_bounds"]((ROOT / "pyproject.toml").read_text())
    assert {pin.split("==")[0] for pin in pins} >= {"twisted", "watchdog", "treq", "txjsonrpc-ng", "croniter"}


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
