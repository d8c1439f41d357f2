"""MCC's own modules import one way, its tools are an explicit list, its job paths stay stable.

The import graph is read from the source (``ast``), not by importing: every ``import`` and
``from ... import`` of an MCC module (``mcc``, ``workers``) in ``mcc/`` and ``workers/``.

- Module-level imports (including those under ``if``/``try`` at module level, but not those under
  ``if TYPE_CHECKING``) form a graph with no cycle.
- Function-level imports count too, and are few: ``create_app`` and ``api.init_app`` import the
  application's parts when they build one (FACTORY), a ``flask`` command loads what it runs
  (COMMAND). Every one is listed (a new one fails, and so does an entry no longer true), and
  counting them as well, the graph still has no cycle: no import is placed inside a function to
  hide one.
- A private name (``_x``) is not used across modules: neither ``from m import _x`` nor ``m._x``.

A package's ``__init__`` is not counted as imported by its submodules (Python runs it first, but
it is the application factory's job to import everything; counting it would make every module
depend on ``create_app``).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from rq.utils import import_attribute

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mcc", "workers")

FACTORY = "the application factory imports the parts of the application it builds"
COMMAND = "a flask command imports what it runs, so `flask --help` stays light"

# importing module -> (why, the MCC modules it imports inside a function)
FUNCTION_LEVEL_ALLOWED: dict[str, tuple[str, set[str]]] = {
    "mcc": (FACTORY, {
        "mcc.api", "mcc.api.socket", "mcc.cli", "mcc.config", "mcc.console", "mcc.errors", "mcc.extensions",
        "mcc.hardening", "mcc.health", "mcc.logging_setup", "mcc.metrics", "mcc.models", "mcc.pipeline.tools",
        "mcc.redis_store", "mcc.runtime.recovery", "mcc.runtime.tools", "mcc.security",
    }),
    "mcc.api": (FACTORY, {
        "mcc.api.agents", "mcc.api.analytics", "mcc.api.audit", "mcc.api.auth", "mcc.api.budget",
        "mcc.api.conversations", "mcc.api.emergency", "mcc.api.github_settings", "mcc.api.issues",
        "mcc.api.notifications", "mcc.api.projects", "mcc.api.pull_requests", "mcc.api.tasks",
        "mcc.api.turns", "mcc.api.users", "mcc.api.webhooks",
    }),
    "mcc.cli": (COMMAND, {
        "mcc.models.agent", "mcc.models.conversation", "mcc.periodic", "mcc.runtime.control",
        "mcc.schemas.turns", "mcc.services.emergency", "mcc.services.runs",
    }),
    "mcc.github.cli": (COMMAND, {
        "mcc.github.auth", "mcc.github.webhooks", "mcc.models.github", "mcc.models.project",
        "mcc.services.github_sync",
    }),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def mcc_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """Yield (node, at_module_level) for every import statement, skipping TYPE_CHECKING blocks."""
    def walk(nodes, module_level):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, module_level
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(ast.iter_child_nodes(node), False)
            elif isinstance(node, ast.ClassDef):
                yield from walk(ast.iter_child_nodes(node), module_level)
            else:
                yield from walk(ast.iter_child_nodes(node), module_level)
    yield from walk(tree.body, True)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The MCC module a dotted name refers to (a module, or the package holding an attribute)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges() -> tuple[set, set, list]:
    """(module-level edges, function-level edges, private uses) among MCC modules."""
    modules = mcc_modules()
    top, inner, private = set(), set(), []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}  # local name -> MCC module it is bound to
        for node, module_level in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target:
                        targets.append(target)
                        if alias.asname:
                            aliases[alias.asname] = target
            else:
                if node.level:  # relative import
                    base = name.split(".")[: -node.level or None] if path.name != "__init__.py" else name.split(".")
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if _resolve(source, modules) is None:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    target = full if full in modules else _resolve(source, modules)
                    targets.append(target)
                    if full in modules:
                        aliases[alias.asname or alias.name] = full
                    elif alias.name.startswith("_") and target != name:
                        private.append(f"{name}: from {source} import {alias.name}")
            for target in targets:
                if target != name:
                    (top if module_level else inner).add((name, target))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != name):
                private.append(f"{name}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    return top, inner, private


def cycles(edges: set) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_module_level_imports_form_no_cycle():
    """MCC's modules import one way at module level: the graph has no cycle."""
    top, _, _ = import_edges()
    assert cycles(top) == []


def test_function_level_imports_are_listed_and_form_no_cycle():
    """An MCC module imported inside a function is on the list with its reason (a new one fails,
    and so does an entry no longer true); counting them with the module-level ones, MCC's modules
    still import one way: no cycle, so none is hidden inside a function."""
    top, inner, _ = import_edges()
    allowed = {(a, b) for a, (_, targets) in FUNCTION_LEVEL_ALLOWED.items() for b in targets}
    assert sorted(inner - allowed) == [], "new function-level imports: import at module level instead"
    assert sorted(allowed - inner) == [], "stale entries: remove them from FUNCTION_LEVEL_ALLOWED"
    assert cycles(top | inner) == []


def test_no_private_name_is_used_across_modules():
    """``_x`` stays in its module: no ``from m import _x`` and no ``m._x`` between MCC modules."""
    assert import_edges()[2] == []


def test_the_checks_see_a_cycle_and_a_private_use():
    """The walk is not vacuous: it finds MCC's real imports, and a made-up cycle is reported."""
    top, _, _ = import_edges()
    assert ("workers.agent", "mcc.runtime.engine") in top
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]


PIPELINE_TOOLS = ["create_tasks", "list_files", "read_file", "read_pull_request", "report_progress",
                  "report_test_result", "submit_changes", "submit_review"]


def _registry_after_importing(first: str) -> list[list[str]]:
    code = (f"import {first}\nfrom mcc.runtime import tools\nbefore = sorted(tools.REGISTRY)\n"
            "from mcc import create_app\ncreate_app()\nimport json\n"
            "print(json.dumps([before, sorted(tools.REGISTRY)]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_tool_registry_is_the_same_whatever_is_imported_first(test_env):
    """Importing a module (budget, the pipeline's tools, the engine, a job module) registers no
    tool; ``create_app`` loads the same registry whichever came first."""
    results = {first: _registry_after_importing(first) for first in
               ("mcc.services.budget", "mcc.pipeline.tools", "mcc.runtime.engine", "workers.agent")}
    assert {first: before for first, (before, _) in results.items()} == {first: [] for first in results}
    assert {first: after for first, (_, after) in results.items()} == {
        first: sorted(["list_participants", *PIPELINE_TOOLS]) for first in results}


# Every job path MCC has ever enqueued: a job queued before an upgrade names one of these.
JOB_PATHS = ["workers.agent.drive_conversation", "workers.github.process_delivery", "workers.github.sync_all",
             "workers.github.sync_repository", "workers.maintenance.purge_expired_tokens",
             "workers.maintenance.reconcile_cost_rollup"]


def test_job_paths_queued_before_an_upgrade_still_resolve():
    """RQ finds a queued job's function by its dotted path: those paths stay (or are aliases)."""
    for path in JOB_PATHS:
        assert callable(import_attribute(path)), path


def _job_functions() -> list[str]:
    found = []
    for path in sorted((ROOT / "workers").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Name) and d.id == "job" for d in node.decorator_list):
                found.append(f"workers.{path.stem}.{node.name}")
    return found


def test_every_job_is_enqueued_by_something():
    """A job function that nothing enqueues is dead code: each ``@job`` path appears in MCC's source."""
    source = "\n".join(path.read_text() for path in sorted((ROOT / "mcc").rglob("*.py")))
    jobs = _job_functions()
    assert sorted(jobs) == sorted(JOB_PATHS)
    assert [path for path in jobs if f'"{path}"' not in source] == []
