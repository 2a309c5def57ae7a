"""The engine's layers (docs/ARCHITECTURE.md, "Layers"): a module imports only from its own layer or lower ones,
and reaches the ``tools`` and ``graphs`` packages only in the places named here. Imports are read with ``ast``
(every import, also those deferred into a function), so nothing is imported to check them."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module belongs to the layer of the longest prefix naming it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("orchestrator.errors", "orchestrator.extras")),  # extras: which optional package each extra installs
    ("backends", ("orchestrator.backends",)),  # where state lives: the store and journal depend on its protocols
    ("storage", ("orchestrator.storage",)),
    ("config", ("orchestrator.config",)),
    ("models", ("orchestrator.models",)),
    ("tooling", ("orchestrator.tooling",)),
    ("native", ("orchestrator.native",)),
    ("planning", ("orchestrator.planning",)),
    ("execution", ("orchestrator.execution",)),
    ("distributed", ("orchestrator.distributed",)),  # a TaskRunner over Ray: experts anywhere in the cluster
    ("workflows", ("orchestrator.workflows",)),
    ("agent", ("orchestrator.agent",)),
    ("serving", ("orchestrator.serving",)),  # HTTP and MCP over the agent; the command line registers its commands
    ("cli", ("orchestrator.cli", "orchestrator.native.cli_train", "orchestrator.distributed.cli_cluster")),
    ("api", ("orchestrator",)),  # the package root: the lazy public API over everything
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}

# Upward imports that are allowed, each deferred into the one function that needs it.
DEFERRED_UPWARD = {
    # Pipeline.run() without an orchestrator builds a planner-free one, so `pipeline.run(image=...)` works alone.
    ("orchestrator.workflows.pipeline", "orchestrator.agent"),
    # [runner.resources] memory sizes are read like every size in the config (parse_size, a pure function); the
    # settings parser itself lives with the back ends because config.py reads store/database/[runner] through it.
    ("orchestrator.backends.locations", "orchestrator.config"),
}

# Where the engine may import the built-in packages outside it. Every other part that uses a built-in expert (the
# planner's attachment traits and demo retrieval, the native path's encoders, its spoken data and the planner's
# perception) gets its class from the registry (`builtin_tool`), so this list holds the two entry points alone.
OUTSIDE = {
    # the `builtin` entry point's fallback when the package was never installed (ToolRegistry.default, builtin_tools)
    "orchestrator.tooling.registry": {"tools"},
    # the one place that builds the LangGraph graphs (graphs/agent.py, graphs/workflow.py): they are the agent's
    # and workflow runs' control flow, not tools, so no registry stands between them and the agent
    "orchestrator.agent": {"graphs"},
}
OUTSIDE_PACKAGES = {"tools", "graphs"}


@dataclass(frozen=True)
class Import:
    target: str  # absolute module name
    line: int
    deferred: bool  # inside a function body


def layer_of(module: str) -> str | None:
    best = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
    return best[0] if best else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[Import]:
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, deferred) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                # `from pkg import module` imports the module: judge by it where it is one
                found.extend(Import(f"{target}.{alias.name}" if child.module is None else target, child.lineno, deferred)
                             for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


def violations(module_imports: dict[str, list[Import]]) -> list[str]:
    problems = []
    for module, imports in sorted(module_imports.items()):
        layer = layer_of(module)
        assert layer is not None, f"{module} is in no layer: add it to LAYERS"
        for imp in imports:
            top = imp.target.split(".")[0]
            if top in OUTSIDE_PACKAGES:
                allowed = next((packages for prefix, packages in OUTSIDE.items()
                                if module == prefix or module.startswith(prefix + ".")), set())
                if top not in allowed:
                    problems.append(f"{module}:{imp.line} imports {imp.target}: the engine reaches `{top}` only "
                                    f"through {', '.join(sorted(OUTSIDE))}")
                continue
            if top != "orchestrator":
                continue
            target_layer = layer_of(imp.target)
            if target_layer is None or RANK[target_layer] <= RANK[layer]:
                continue
            if (module, imp.target) in DEFERRED_UPWARD and imp.deferred:
                continue
            problems.append(f"{module}:{imp.line} ({layer}) imports {imp.target} ({target_layer}), a higher layer")
    return problems


def engine_imports() -> dict[str, list[Import]]:
    result = {}
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        module = module_name(path)
        result[module] = imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    return result


def test_the_engine_keeps_its_layers():
    problems = violations(engine_imports())
    assert not problems, "\n".join(problems)


def test_every_subpackage_is_in_a_layer():
    for path in (ROOT / "orchestrator").iterdir():
        if (path / "__init__.py").exists():
            assert layer_of(f"orchestrator.{path.name}") not in (None, "api"), f"{path.name} has no layer"


# ---------------------------------------------------------------------------------------------- the checker itself

def fake(module: str, source: str) -> dict[str, list[Import]]:
    return {module: imports_of(source, module, False)}


@pytest.mark.parametrize(("module", "source"), [
    ("orchestrator.storage.store", "from ..planning.plan import Plan\n"),
    ("orchestrator.storage.store", "def f():\n    from orchestrator.execution import executor\n"),
    ("orchestrator.planning.plan", "from ..workflows import workflow\n"),
    ("orchestrator.execution.executor", "from .. import agent\n"),
    ("orchestrator.workflows.pipeline", "from ..agent import Orchestrator\n"),  # allowed only deferred
    ("orchestrator.planning.planner_retrieval", "def f():\n    from tools.sentence_embeddings import X\n"),
    ("orchestrator.execution.compose", "import graphs.agent\n"),
    ("orchestrator.tooling.registry", "import graphs\n"),
    ("orchestrator.native.encoders", "def f():\n    from tools.speech import SpeechRecognition\n"),
    ("orchestrator.agent", "def f():\n    from tools.native_chat import planner_perception\n"),
])
def test_the_checker_catches(module, source):
    assert len(violations(fake(module, source))) == 1


@pytest.mark.parametrize(("module", "source"), [
    ("orchestrator.planning.planner", "from ..storage.store import ArtifactStore\nfrom .plan import Plan\n"),
    ("orchestrator.workflows.pipeline", "def run():\n    from ..agent import Orchestrator\n"),
    ("orchestrator.tooling.registry", "def f():\n    from tools import BUILTIN_TOOLS\n"),
    ("orchestrator.agent", "from graphs.agent import build_agent_graph\n"),
    ("orchestrator.native.cli_train", "from ..cli.planner_commands import add_train_planner_parser\n"),
    ("orchestrator.cli.commands", "from ..agent import Orchestrator\nimport numpy\n"),
])
def test_the_checker_allows(module, source):
    assert violations(fake(module, source)) == []


def test_relative_imports_resolve_from_the_package():
    imports = imports_of("from . import plan\nfrom ..storage.store import X\nfrom .plan_syntax import Y\n",
                         "orchestrator.planning.planner", False)
    assert [imp.target for imp in imports] == ["orchestrator.planning.plan", "orchestrator.storage.store",
                                                "orchestrator.planning.plan_syntax"]
    inits = imports_of("from .storage.artifacts import Artifact\n", "orchestrator", True)
    assert inits[0].target == "orchestrator.storage.artifacts"
