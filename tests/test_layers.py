"""The package's layering, read from the import graph (no VM, nothing imported).

Each module sits in a layer by its folder (overlay_harness/__init__.py describes them);
it may import the package's modules of its own layer and of the layers before it,
never a later one. The guest-side scripts import the standard library only, and the
cases import nothing of the package but its public API.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "overlay_harness"
LAYERS = ["in_guest", "host", "library", "plugin", "results", "tools"]
# netns.py imports pyroute2 from the directory the host names with --site (sys.path
# has no site-packages under -S), inside the helper that needs it.
GUEST_SIDE_EXTRA = {"netns.py": {"pyroute2"}}


def layer_of(module):
    """overlay_harness.host.vm -> "host"; a module at the package's top is a tool."""
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package face: lazy re-exports, imports nothing eagerly
    return parts[1] if len(parts) > 2 or parts[1] in LAYERS[:-1] else "tools"


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    """(line, module imported) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target
            for alias in node.names:  # `from . import kernel` imports a module too
                yield node.lineno, f"{target}.{alias.name}"


def package_modules():
    return sorted(PACKAGE.rglob("*.py"))


def existing(module):
    """The package module an import names, or None (a name inside a module, or not ours)."""
    if not module.startswith("overlay_harness"):
        return None
    path = ROOT / Path(*module.split("."))
    if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
        return module
    return None


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    me = module_name(path)
    mine = layer_of(me)
    if mine is None:
        assert not [m for _, m in imports(path) if existing(m) and m != "overlay_harness"], \
            "the package face imports nothing eagerly"
        return
    wrong = []
    for line, target in imports(path):
        target = existing(target)
        if target is None or layer_of(target) is None:
            continue
        theirs = layer_of(target)
        if LAYERS.index(theirs) > LAYERS.index(mine):
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {mine} may not use {theirs}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((PACKAGE / "in_guest").glob("*.py")), ids=lambda p: p.name)
def test_guest_side_scripts_use_the_standard_library_only(path):
    """They run as `python3 -I -S FILE`: no site-packages, and nothing of this package."""
    outside = [f"{line}: {m}" for line, m in imports(path)
               if m.split(".")[0] not in sys.stdlib_module_names | GUEST_SIDE_EXTRA.get(path.name, set())]
    assert not outside, f"{path.name} imports beyond the standard library: {outside}"


@pytest.mark.parametrize("path", sorted((ROOT / "cases").glob("*.py")), ids=lambda p: p.name)
def test_cases_use_the_public_api_only(path):
    internal = [f"{line}: {m}" for line, m in imports(path)
                if m.startswith("overlay_harness.") and existing(m)]
    assert not internal, f"{path.name} reaches into the package; import from overlay_harness: {internal}"


def test_the_layer_list_names_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS[:-1])


def test_an_upward_import_is_caught():
    """The check itself: a host module that imports the pytest layer is reported."""
    fake = PACKAGE / "host" / "_layering_probe.py"
    try:
        fake.write_text("from ..plugin import session\n")
        with pytest.raises(AssertionError, match="host may not use plugin"):
            test_imports_point_one_way(fake)
    finally:
        fake.unlink()
