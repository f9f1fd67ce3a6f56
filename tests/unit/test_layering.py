"""Who may import whom: the media plane nothing of TURN or of the cluster (which builds on it through
sfu/remote.py), config nothing of netconfig, and the shared plumbing no capability, so that each can
be read, tested and moved without the others."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (the packages, what none of their modules may import)
RULES = [
    (("appliance.rtc", "appliance.sfu"), ("appliance.turn", "appliance.cluster")),
    (("appliance.config",), ("netconfig",)),
    (("appliance.plumbing",), ("appliance.api", "appliance.config", "appliance.rtc", "appliance.sfu",
                              "appliance.turn", "netconfig")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module an import statement of `module` may name, relative imports made absolute.
    `from x import y` yields x and x.y, since y may be a submodule."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("packages, forbidden", RULES, ids=lambda v: ",".join(v))
def test_packages_import_nothing_forbidden(packages, forbidden):
    offences = []
    for package in packages:
        files = modules(package)
        assert files, f"no modules found under {package}"
        for path in files:
            name = module_name(path)
            for target in imported(path.read_text(), name, path.name == "__init__.py"):
                if any(within(target, f) for f in forbidden):
                    offences.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("from ..turn.deadlines import Deadlines", "appliance.rtc.ice", False, "appliance.turn.deadlines"),
    ("from .. import turn", "appliance.rtc.io", False, "appliance.turn"),
    ("from .turn import io", "appliance", True, "appliance.turn.io"),
    ("import appliance.turn.io as io", "appliance.sfu.sfu", False, "appliance.turn.io"),
    ("def f():\n    from netconfig.tunnel import index", "appliance.config.checks", False, "netconfig.tunnel"),
])
def test_relative_and_nested_imports_are_resolved(source, module, is_package, expected):
    assert expected in set(imported(source, module, is_package))
