"""Session-scoped access: through a :class:`Session`, another session's runs and artifacts do not exist.

``Orchestrator.result`` and reads of the store without a session are the local owner's (documented
as such); what a server hands to a caller is that caller's Session, and these tests hold it to the
session's own runs and artifacts.
"""

from __future__ import annotations

from pathlib import Path
import pytest

from orchestrator.agent import Orchestrator
from orchestrator.execution.compose import Composer
from orchestrator.errors import ArtifactNotFoundError, InvalidInputError
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.stub_tools import STUB_TOOLS

PLAN = {"tasks": [{"id": "colour", "tool": "stub-wait", "args": {"label": "red", "seconds": 0.0}},
                  {"id": "paint", "tool": "stub-paint", "args": {"text": "<colour>"}}]}


@pytest.fixture
def orch(settings) -> Orchestrator:
    orchestrator = Orchestrator(settings=settings, registry=ToolRegistry(STUB_TOOLS), planner=None,
                                composer=Composer(None))
    yield orchestrator
    orchestrator.runner.shutdown()


def test_a_session_cannot_read_another_sessions_run_or_artifacts(orch: Orchestrator, tmp_path: Path):
    alice, bob = orch.session("alice"), orch.session("bob")
    theirs = orch.run("paint it red", session="alice", plan=PLAN)
    assert theirs.status == "done" and theirs.artifacts
    picture = theirs.first("image").id
    made = [a.id for a in alice.artifacts()]
    assert picture in made and theirs.answer_id in made

    # Alice's own session reads everything of hers.
    assert alice.result(theirs.run_id).answer == theirs.answer
    assert alice.artifact(picture).id == picture and alice.load(theirs.answer_id) == theirs.answer
    assert alice.export(picture, tmp_path / "mine.png").read_bytes() == orch.store.read_bytes(picture)

    # Bob's session: her run and every artifact of it are not found, whatever is asked.
    with pytest.raises(InvalidInputError, match=f"no run '{theirs.run_id}' in session 'bob'"):
        bob.result(theirs.run_id)
    with pytest.raises(InvalidInputError, match=f"no run '{theirs.run_id}' in session 'bob'"):
        bob.resume(theirs.run_id)
    for artifact_id in made:
        with pytest.raises(ArtifactNotFoundError, match="in session 'bob'"):
            bob.artifact(artifact_id)
        with pytest.raises(ArtifactNotFoundError, match="in session 'bob'"):
            bob.load(artifact_id)
        with pytest.raises(ArtifactNotFoundError, match="in session 'bob'"):
            bob.export(artifact_id, tmp_path / "stolen")
        with pytest.raises(ArtifactNotFoundError, match="in session 'bob'"):
            bob.send("brighten this", files=[artifact_id])
    assert not (tmp_path / "stolen").exists()
    assert bob.artifacts() == [] and bob.history() == []

    # Named in a plan, her picture fails validation for bob; nothing of his run touches it.
    attempt = orch.run("brighten it", session="bob",
                       plan={"tasks": [{"id": "t1", "tool": "stub-brighten", "args": {"image": picture}}]})
    assert attempt.status == "failed" and picture in (attempt.error or ""), attempt
    assert not attempt.tasks and [r.id for r in bob.history()] == [attempt.run_id]
    assert {a.id for a in bob.artifacts()} <= {attempt.answer_id} and picture not in str(attempt.answer)

    # The owner-level reader is deliberate: the local owner sees any session's run.
    owner = orch.result(theirs.run_id)
    assert owner.session == "alice" and owner.answer == theirs.answer
    with pytest.raises(InvalidInputError, match="in session 'bob'"):
        orch.result(theirs.run_id, session="bob")
