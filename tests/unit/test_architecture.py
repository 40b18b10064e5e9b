"""The folders are the architecture: each part imports only the parts below it, no part reaches into another's
private (``_``) modules, and no modules import each other in a circle. docs/architecture.md says the same in words;
this test is what holds it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO
from support.parts import parts

#: folder -> the part it is (ftc.<part> -> <part>; "ftc" for the CLI and the errors), read from pyproject.toml's
#: ``[tool.setuptools] package-dir``, the one place the parts are listed
PARTS = {folder: package.removeprefix("ftc.") for folder, package in parts().items()}

#: what each part may import of the project besides itself (every part may use ftc.errors and ftc.__version__)
ALLOWED = {
    "spec": set(),
    "stores": {"spec"},
    "images": {"spec", "stores"},
    "lineage": {"spec", "stores"},
    "compiler": {"spec", "stores", "images", "lineage"},
    "runtime": {"spec", "stores", "images", "lineage"},
    "serving": {"spec", "stores", "lineage", "runtime"},
    "ftc": {"spec", "stores", "images", "lineage", "compiler", "runtime", "serving"},
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package as the source tree lays it out."""
    found = {}
    for folder, part in PARTS.items():
        package = "ftc" if part == "ftc" else f"ftc.{part}"
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _part_of(module: str) -> str:
    """``ftc.spec.plan`` -> spec; ``ftc.cli`` and ``ftc.errors`` -> ftc (errors: "errors")."""
    pieces = module.split(".")
    if len(pieces) == 1:
        return "ftc"
    if pieces[1] == "errors":
        return "errors"
    return pieces[1] if pieces[1] in ALLOWED else "ftc"


def _lazy_home(package: str, name: str) -> str | None:
    """The room a name of ``ftc.runtime`` comes from (``from ftc.runtime import run`` imports the launch layer)."""
    if package != "ftc.runtime":
        return None
    import ftc.runtime

    if name not in ftc.runtime.__all__:
        return None
    return "ftc.runtime.launch" if name in ftc.runtime._LAUNCH else "ftc.runtime.training"


def _imports(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The ftc modules ``module`` imports (relative imports resolved), at the top of the module or anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when that is a module, else names of pkg (the runtime package's
            # names are its rooms', handed out lazily: counted as imports of the room that holds them)
            names = [
                _lazy_home(base, a.name) or (f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
                for a in node.names
            ]
        else:
            continue
        out.update(n for n in names if n == "ftc" or n.startswith("ftc."))
    return out


def test_the_parts_are_read_from_pyproject_and_each_has_its_import_rules():
    assert PARTS["src/ftc"] == "ftc" and PARTS["spec"] == "spec", PARTS
    assert not set(PARTS.values()) - set(ALLOWED), "a part in pyproject.toml's package-dir with no rules in ALLOWED"


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for module, path in MODULES.items():
        part = _part_of(module)
        for imported in _imports(module, path, top_level_only=False):
            other = _part_of(imported)
            if other in (part, "errors") or imported == "ftc":
                continue
            if other not in ALLOWED.get(part, set()):
                wrong.append(
                    f"{module} imports {imported} ({part} may import {sorted(ALLOWED[part]) or 'no other part'})"
                )
    assert wrong == []


def test_no_part_reaches_into_another_parts_private_modules():
    wrong = []
    for module, path in MODULES.items():
        for imported in _imports(module, path, top_level_only=False):
            private = any(piece.startswith("_") for piece in imported.split(".")[2:])
            if private and _part_of(imported) != _part_of(module):
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


@pytest.mark.parametrize("top_level_only", [True, False], ids=["at import time", "counting deferred imports"])
def test_no_modules_import_each_other_in_a_circle(top_level_only):
    graph = {
        m: {i for i in _imports(m, p, top_level_only=top_level_only) if i in MODULES and i != m}
        for m, p in MODULES.items()
    }
    # a package's __init__ importing its own modules is how packages list their public names, not a circle
    graph = {m: {i for i in deps if not (m == i.rsplit(".", 1)[0] and m in i)} for m, deps in graph.items()}
    circles = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert circles == []


#: the rooms inside runtime/ and what each may import of the others: the training library imports neither, a recipe
#: only the library, the launch layer both (docs/architecture.md)
ROOMS = {
    "ftc.runtime.training": set(),
    "ftc.runtime.recipes": {"ftc.runtime.training"},
    "ftc.runtime.launch": {"ftc.runtime.training", "ftc.runtime.recipes"},
}
#: the parts outside the runtime that may use each room (the CLI starts plans; serving generates and exports)
ROOM_USERS = {
    "ftc.runtime.training": {"ftc", "serving"},
    "ftc.runtime.recipes": set(),
    "ftc.runtime.launch": {"ftc"},
}


def _room_of(module: str) -> str | None:
    return next((room for room in ROOMS if module == room or module.startswith(room + ".")), None)


def test_each_room_of_the_runtime_imports_only_the_rooms_below_it():
    wrong = []
    for module, path in MODULES.items():
        room = _room_of(module)
        if room is None:
            continue
        for imported in _imports(module, path, top_level_only=False):
            other = _room_of(imported)
            if other == room:
                # one recipe never imports another: what two recipes share belongs in the library
                if room == "ftc.runtime.recipes" and room not in (module, imported):
                    wrong.append(f"{module} imports the recipe {imported}")
            elif other is not None and other not in ROOMS[room]:
                wrong.append(
                    f"{module} imports {imported} ({room} may import {sorted(ROOMS[room]) or 'no other room'})"
                )
    assert wrong == []


def test_the_training_library_and_the_launch_layer_are_used_only_where_they_may_be():
    """The compiler never imports the training library or the launch layer, lineage never the training library; only
    the CLI starts a plan (beside the runtime's own entry points), and no part outside the runtime runs a recipe."""
    wrong = []
    for module, path in MODULES.items():
        if _part_of(module) == "runtime":
            continue
        for imported in _imports(module, path, top_level_only=False):
            room = _room_of(imported)
            if room is not None and _part_of(module) not in ROOM_USERS[room]:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def _private_uses(path: Path, *, attributes: bool) -> list[str]:
    """The private (``_``) names of ftc a file outside the package imports (modules, or names from a module) and,
    with ``attributes``, takes from an ftc module it imported (``checkpoint._helper``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, modules = [], {}  # local name -> the ftc module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ftc."):
                    found.append(alias.name)
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftc") and not node.level:
            for alias in node.names:
                found.append(f"{node.module}.{alias.name}")
                if f"{node.module}.{alias.name}" in MODULES:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif attributes and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in modules:
                found.append(f"{modules[node.value.id]}.{node.attr}")
    private = [name for name in found if any(p.startswith("_") and p != "__version__" for p in name.split(".")[1:])]
    return [f"{path.relative_to(REPO)}: {name}" for name in private]


def test_the_benchmarks_use_only_public_names_of_ftc():
    wrong = [use for path in sorted((REPO / "bench").glob("*.py")) for use in _private_uses(path, attributes=True)]
    assert wrong == []


def test_the_tests_import_only_public_names_of_the_runtime():
    wrong = [
        use
        for path in sorted((REPO / "tests").rglob("*.py"))
        for use in _private_uses(path, attributes=False)
        if use.split(": ", 1)[1].startswith("ftc.runtime")
    ]
    assert wrong == []


def test_the_runtime_without_its_launcher_loads_no_launcher_module():
    """The chat template (serving's prompt format) and the training library import nothing of the launch layer (its
    publisher, its engines), nor a recipe; ``import ftc.runtime`` alone imports neither room."""
    import subprocess
    import sys

    library = sorted(m for m in MODULES if m.startswith("ftc.runtime.training."))
    code = (
        "import sys, importlib\n"
        f"for m in {library!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith(("ftc.runtime.launch", "ftc.runtime.recipes"))] == []
    assert set(library) <= set(loaded) and len(library) > 10
    assert "ftc.runtime.training.chat_template" in loaded and "ftc.runtime.training.loss" in loaded
    code = "import sys, ftc.runtime\nprint('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith("ftc.runtime.")] == []
    code = "import sys, ftc.runtime.training.chat_template\nprint('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "deepspeed", "peft")] == []


def test_the_architecture_page_names_every_part():
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for folder in PARTS:
        assert f"`{folder}/`" in page, f"docs/architecture.md does not name {folder}/"
    assert sorted(p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(
        f for f in PARTS if "/" not in f
    ), "a top-level package folder that is not one of the parts"


#: the size rules of a module a reader can take in one sitting (issue 28): lines per file, lines per function unless
#: the function says why it is longer in a ``# long:`` comment on its ``def`` line or the line above
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _too_long(path: Path, name: str) -> list[str]:
    """``name`` (or ``name::function``) for the file at ``path`` or a function of it over the size rules."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = [name] if len(lines) > MAX_FILE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        said_why = any("# long:" in lines[i - 1] for i in (first - 1, node.lineno) if i >= 1)
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and not said_why:
            found.append(f"{name}::{node.name}")
    return found


def test_no_module_or_function_is_too_long_to_read_in_one_sitting():
    wrong = [long for path in MODULES.values() for long in _too_long(path, str(path.relative_to(REPO)))]
    assert wrong == [], f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function (split it, or say why)"


def test_the_size_rule_sees_a_long_function_and_its_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    module = tmp_path / "example.py"
    module.write_text(f"def long_one():\n{body}\n\n\n# long: one table\ndef said_why():\n{body}\n")
    assert _too_long(module, "example.py") == ["example.py::long_one"]
    module.write_text("\n" * MAX_FILE_LINES + "x = 1\n")
    assert _too_long(module, "example.py") == ["example.py"]


def _names_a_source(node: ast.AST) -> bool:
    """``x.source``, ``x["source"]`` or ``x.get("source")``: an input's (or a record's) source kind."""
    if isinstance(node, ast.Attribute):
        return node.attr == "source"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "source"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "source"
    return False


def _kind_names(node: ast.AST, kinds: set[str]) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_kind_names(e, kinds) for e in node.elts)
    return isinstance(node, ast.Constant) and node.value in kinds


def test_only_the_source_kinds_branch_on_the_kind_of_an_input():
    """Each kind of input source is one module of ``ftc.stores.sources`` and a line in its ``SOURCES``: no other module
    compares an input's source with a kind's name, nor keeps a table by kind (it asks the kind), so a new kind
    touches nothing else."""
    from ftc.stores.sources import SOURCES

    kinds, wrong = set(SOURCES), []
    for module, path in MODULES.items():
        name = str(path.relative_to(REPO))
        if module.startswith("ftc.stores.sources"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_names_a_source(s) for s in sides) and any(_kind_names(s, kinds) for s in sides):
                    wrong.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.Dict) and sum(_kind_names(k, kinds) for k in node.keys if k is not None) > 1:
                wrong.append(f"{name}:{node.lineno} (a table by kind)")
    assert wrong == []
