"""The package's shape, checked: layers import only downward (imports inside
functions included), the import graph has no cycle, only the native layer
touches the compiled core, and no module grows past MAX_LINES.

The layers, bottom to top (docs/architecture.md draws them):

    tools      sktime, circuit, docs, _forkfree: standalone, import nothing of shmproc
               but each other
    common     errors, outcome words, validators, config, timing, exit/fork hooks
    _native    the only caller of the compiled C core
    wire       pickling, out-of-band buffers, arenas, records
    channels   Queue, JoinableQueue, SimpleQueue (and a growing Queue's chain)
    runtime    the worker side
    jobs       the one job engine
    backends   local, ray
    faces      shmproc, process, pool, executor, processing, ray_backend, demo, joblib
"""
from __future__ import annotations

import ast
import pathlib

import pytest

import shmproc

PACKAGE = pathlib.Path(shmproc.__file__).resolve().parent
MAX_LINES = 700

LAYERS = ["tools", "common", "observe", "_native", "wire", "channels", "runtime", "jobs", "backends", "faces"]
TOOLS = {"shmproc.sktime", "shmproc.circuit", "shmproc.docs", "shmproc._forkfree"}
COMPILED = {"shmproc._shmp_cffi", "shmproc._marks", "shmproc._laps", "shmproc._spans",
            "shmproc._callloop"}


def _modules() -> dict:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    if module in TOOLS:
        return "tools"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "faces"


def _imports(module: str, path: pathlib.Path) -> set:
    """Every shmproc module `module` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES | dict.fromkeys(COMPILED)
                       else origin for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "shmproc" or t.startswith("shmproc."))
    found.discard(module)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_walk_finds_the_package():
    # A walk that found nothing would pass every test below.
    assert {"shmproc.pool", "shmproc._native.ring", "shmproc.jobs.engine",
            "shmproc.backends.local.pool", "shmproc.runtime.runner"} <= set(MODULES)
    assert "shmproc.jobs.task" in GRAPH["shmproc.jobs.engine"]
    assert "shmproc.backends.local.run" in GRAPH["shmproc.backends.resolve"]   # inside a function


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, targets in GRAPH.items():
        rank = LAYERS.index(layer_of(module))
        for target in targets:
            if target in COMPILED:
                continue
            if LAYERS.index(layer_of(target)) > rank:
                upward.append(f"{module} ({layer_of(module)}) imports {target} "
                              f"({layer_of(target)})")
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state = {}          # module -> 1 on the current path, 2 done
    path = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_only_the_native_layer_touches_the_compiled_core():
    offenders = []
    for module, path in MODULES.items():
        if layer_of(module) == "_native":
            continue
        if GRAPH[module] & COMPILED:
            offenders.append(f"{module} imports the compiled core")
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        if names & {"ffi", "lib"}:
            offenders.append(f"{module} uses {sorted(names & {'ffi', 'lib'})}")
    assert not offenders, "\n".join(offenders)


def test_the_worker_side_does_not_need_the_process_class():
    worker_side = [m for m in MODULES if layer_of(m) in ("runtime", "jobs", "wire", "common")]
    assert worker_side
    for module in worker_side:
        assert "shmproc.process" not in GRAPH[module], module


def test_tools_import_nothing_of_shmproc():
    # ... but each other (_forkfree's locks)
    for module in TOOLS:
        assert GRAPH[module] <= TOOLS, (module, GRAPH[module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_limit(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it"


def test_the_check_catches_an_upward_import(tmp_path):
    # The checker itself: a lower module importing a face is reported.
    fake = tmp_path / "shmproc" / "wire"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..pool import Pool\n")
    found = _imports("shmproc.wire.bad", fake / "bad.py")
    assert found == {"shmproc.pool"}
    assert LAYERS.index(layer_of("shmproc.pool")) > LAYERS.index(layer_of("shmproc.wire.bad"))


def test_pool_is_one_class_whatever_the_backend():
    pool = shmproc.Pool(1)
    try:
        assert isinstance(pool, shmproc.Pool)
        assert type(pool) is shmproc.Pool
    finally:
        pool.terminate()
