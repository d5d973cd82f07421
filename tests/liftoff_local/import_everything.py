"""Imports every module liftoff local loads, in whatever venv runs this script.

Run by tests/liftoff_local/test_readme_quickstart.py with a fresh clone's `.venv`, which
`python3 -m liftoff_local` built from `liftoff_local/requirements.txt` alone: liftoff_local/*,
every module of services/ (the processes are `python -m services <command>`), and the stack
validation it shares with the Pulumi program (components config, validation, the capability
packages and their settings). Exits 1 naming each module that fails to import.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_modules(package: str) -> list[str]:
    """The package and every module below it, except `__main__` (it runs the command)."""
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        if not info.name.endswith(".__main__"):
            found.append(info.name)
    return sorted(found)


def components_modules() -> list[str]:
    capabilities = sorted(p.parent.name for p in (ROOT / "components").glob("*/settings.py"))
    return [
        "components.config",
        "components.validation",
        *(f"components.{name}" for name in capabilities),
        *(f"components.{name}.settings" for name in capabilities),
    ]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    modules = [*package_modules("liftoff_local"), *package_modules("services")]
    modules += components_modules()
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # report every failure, not only the first
            failed.append(f"{name}:\n{traceback.format_exc(limit=3)}")
    if "pulumi" in sys.modules:
        failed.append("pulumi was imported (local mode's venv does not have it)")
    for failure in failed:
        print(f"FAILED {failure}")
    print(f"imported {len(modules) - len(failed)} of {len(modules)} modules with {sys.executable}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
