"""The three layers a newcomer sees in the file tree, and the import rules between them:

    vidshard/     the application (CLI, tools, bench, demo, training example): imports both below
    shardwriter/  the writer library: of the reader, imports `streaming.format` only
    streaming/    the reader library: imports nothing of ours outside itself

No import cycle between files, whatever the layer, function-level imports included.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("streaming", "shardwriter", "vidshard")


def modules() -> dict[str, str]:
    """module name -> file, for every module of our three packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                    found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    return found


def imports_of(module: str, path: str, known: dict[str, str]) -> set[str]:
    """Our modules that `module` imports anywhere in its file (absolute or relative)."""
    is_package = path.endswith("__init__.py")
    base = module.split(".") if is_package else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*parent, node.module] if node.module else parent)
            names = [f"{target}.{a.name}" for a in node.names] + [target]
        for name in names:
            while name and name not in known:  # `from pkg import mod` names a module; `import a.b.c` its package
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def test_reader_imports_nothing_of_ours_outside_itself():
    bad = {m: sorted(d for d in deps if not d.startswith("streaming")) for m, deps in graph().items() if m.startswith("streaming")}
    assert not {m: d for m, d in bad.items() if d}


def test_writer_imports_only_the_format_of_the_reader():
    g = graph()
    bad = {m: sorted(d for d in deps if d.startswith("vidshard") or d.startswith("streaming") and d != "streaming.format")
           for m, deps in g.items() if m.startswith("shardwriter")}
    assert not {m: d for m, d in bad.items() if d}


def test_no_import_cycles_between_files():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d):], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_import_streaming_is_light_in_a_fresh_interpreter():
    code = ("import json, sys; import streaming; light = sorted(sys.modules); from streaming import VideoShardDataset, collate; "
            "print(json.dumps([light, sorted(sys.modules)]))")
    light, full = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                            cwd=ROOT).stdout)
    assert "torch" not in light  # `import streaming` alone: the format, nothing heavy
    for modules_loaded in (light, full):
        assert not [m for m in modules_loaded if m.split(".")[0] in ("shardwriter", "vidshard", "torchvision")]


def test_graph_sees_relative_and_function_level_imports():
    # The checks above are only as good as the graph: it must see what the files import.
    g = graph()
    assert "streaming.format" in g["shardwriter.task"]  # absolute
    assert "streaming.plan" in g["streaming.dataset"]  # relative, from a sibling
    assert "vidshard.train.trainer" in g["vidshard.demo"]  # inside a function
