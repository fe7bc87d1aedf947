"""What `pip install .` (the Docker images) ships must be what the code imports."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_python_package_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("contract", "agent", "collector", "camsim")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"


def test_console_scripts_point_at_real_entry_points():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
        assert f"def {func}(" in (ROOT / (module.replace(".", "/") + ".py")).read_text()
