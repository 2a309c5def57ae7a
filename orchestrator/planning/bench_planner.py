"""``anymoda bench planner``: run planners over a case file and score them, our planner beside a baseline.

Each case's ``files`` become *virtual* input artifacts (an id of the right kind carrying the file's
name; nothing is stored or executed), the planner plans, and the plan is reduced to a graph of
Hugging Face task tags (:func:`orchestrator.planning.plan_metrics.graph_from_plan`) for scoring.

Planner specs:

* ``local[:MODEL]``: ours: compact syntax under the per-line grammar, demos, repairs (default
  model: the packaged Qwen2.5-Coder-0.5B-Instruct);
* ``naive[:MODEL]``: the same LLM with a plain JSON prompt: no constraint, no demos, no repair;
* ``openai:BASE_URL#MODEL``: an OpenAI-compatible endpoint in JSON-schema mode.

Planners that name the same model share one loaded copy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..models.packaged_llm import QWEN_CODER_05B
from ..storage.artifacts import Artifact, ArtifactKind
from ..tooling.registry import ToolRegistry
from .local_llm import LocalLLMBackend
from .plan_metrics import (
    Case,
    CaseResult,
    Graph,
    Node,
    graph_from_plan,
    registry_tool_task,
)
from .planner import OpenAICompatibleBackend, Planner, PlanningFailedError


@dataclass(frozen=True)
class NamedPlanner:
    label: str
    planner: Planner


def virtual_artifacts(case: Case) -> list[Artifact]:
    """Stand-ins for a case's files: stable ids (from the case id and file name) of the declared kind."""
    artifacts = []
    for position, file in enumerate(case.files):
        try:
            kind = ArtifactKind.parse(file["kind"])
        except InvalidInputError as exc:
            raise InvalidInputError(f"case {case.id!r}, file {file['name']!r}: {exc}") from None
        digest = hashlib.sha256(f"{case.id}/{position}/{file['name']}".encode()).hexdigest()[:16]
        artifacts.append(Artifact(f"{kind.value}-{digest}", kind, "application/octet-stream", 0, "",
                                  {"name": file["name"]}))
    return artifacts


def planner_from_spec(spec: str, registry: ToolRegistry, backends: dict[str, LocalLLMBackend] | None = None) -> NamedPlanner:
    """Build a planner from a spec (see the module docstring); ``backends`` shares loaded local models."""
    backends = {} if backends is None else backends
    kind, _, rest = spec.partition(":")
    if kind in ("local", "naive"):
        model = rest or QWEN_CODER_05B
        backend = backends.setdefault(model, LocalLLMBackend(model, max_new_tokens=512))
        if kind == "local":
            return NamedPlanner(spec, Planner(backend, registry))
        return NamedPlanner(spec, Planner(backend, registry, syntax="json", constrain=False, max_repairs=0, demos=None,
                                          prune=False))
    if kind == "openai":
        url, _, model = rest.partition("#")
        if not url or not model:
            raise InvalidInputError(f"planner spec {spec!r}: write openai:BASE_URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#qwen")
        return NamedPlanner(spec, Planner(OpenAICompatibleBackend(url, model), registry))
    raise InvalidInputError(f"unknown planner spec {spec!r}; use local[:MODEL], naive[:MODEL] or openai:BASE_URL#MODEL")


def run_case(planner: Planner, case: Case, registry: ToolRegistry) -> CaseResult:
    """Plan one case; parse/valid flags and the graph as the benchmark scores them."""
    artifacts = virtual_artifacts(case)
    names = {a.id: a.metadata["name"] for a in artifacts}
    tool_task = registry_tool_task(registry)
    started = time.perf_counter()
    try:
        result = planner.plan(case.request, artifacts=artifacts)
        plan, valid = result.plan, True
    except PlanningFailedError as failure:
        valid = False
        last_text = failure.last_text
        try:  # a plan that parses but fails validation still has a graph to score
            plan = planner.parse(last_text, artifacts)
        except InvalidInputError:
            return CaseResult(case, None, False, False, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    graph = graph_from_plan(plan, tool_task)
    readable = Graph(tuple(Node(n.id, n.task, {k: names.get(v, v) if isinstance(v, str) else v for k, v in n.args.items()})
                           for n in graph.nodes), graph.links)
    return CaseResult(case, readable, True, valid, seconds)


def run_benchmark(planner: Planner, cases: Sequence[Case], registry: ToolRegistry,
                  progress: Callable[[int, CaseResult], None] | None = None) -> list[CaseResult]:
    results = []
    for index, case in enumerate(cases):
        result = run_case(planner, case, registry)
        results.append(result)
        if progress is not None:
            progress(index, result)
    return results
