"""The planner's repair loop against a scripted OpenAI-compatible endpoint on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from orchestrator import AudioClip, InvalidInputError, ToolRegistry
from orchestrator.planning.planner import (
    OpenAICompatibleBackend,
    Planner,
    PlannerBackendError,
    PlanningFailedError,
    build_messages,
    extract_json,
)


class ScriptedEndpoint:
    """A local /chat/completions server that answers with the next scripted reply and records requests."""

    def __init__(self, replies: list[str | tuple[int, str]]):
        self.replies = list(replies)
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                length = int(self.headers["Content-Length"])
                endpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                          "body": json.loads(self.rfile.read(length))})
                reply = endpoint.replies.pop(0)
                if isinstance(reply, tuple) and reply[0] == "sse":  # a streamed answer, one chunk per event
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in reply[1]:
                        chunk = {"choices": [{"delta": {"content": piece}}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                status, content = reply if isinstance(reply, tuple) else (200, reply)
                body = content.encode() if status != 200 else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint_factory():
    made = []

    def make(replies):
        endpoint = ScriptedEndpoint(replies)
        made.append(endpoint)
        return endpoint

    yield make
    for endpoint in made:
        endpoint.close()


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


def planner_for(endpoint, registry, store, **kwargs) -> Planner:
    backend = OpenAICompatibleBackend(endpoint.url, "scripted-model", api_key="secret", timeout=10)
    kwargs.setdefault("demos", None)  # the repair loop is under test here; demo turns have a test of their own
    return Planner(backend, registry, store=store, **kwargs)


def test_each_kind_of_bad_plan_is_caught_and_repaired(endpoint_factory, registry, store):
    photo = store.put_value("image", Image.new("RGB", (16, 16)), session="s", metadata={"name": "receipt.png"})
    sound = store.put_value("audio", AudioClip(np.zeros(1600, np.float32), 16_000), session="s")
    good = {"tasks": [{"id": "t1", "tool": "ocr", "args": {"image": photo.id}},
                      {"id": "t2", "tool": "text-to-speech", "args": {"text": "<t1.text>"}}]}
    endpoint = endpoint_factory([
        "Sure! Here is the plan: {tasks: [ocr]}",                                                   # malformed JSON
        json.dumps({"tasks": [{"id": "t1", "tool": "read-text", "args": {"image": photo.id}}]}),     # invented tool
        json.dumps({"tasks": [{"id": "t1", "tool": "ocr", "args": {"image": sound.id}}]}),           # wrong kind
        json.dumps({"tasks": [{"id": "t1", "tool": "ocr", "args": {"image": "image-00000000000000ff"}}]}),  # missing
        "```json\n" + json.dumps(good) + "\n```",                                                    # fenced, valid
    ])
    result = planner_for(endpoint, registry, store, max_repairs=4).plan("Read this receipt aloud", artifacts=[photo], session="s")
    assert result.validated.order == ("t1", "t2") and result.repairs == 4
    problems = [attempt.problems for attempt in result.attempts]
    assert "not valid JSON" in problems[0][0]
    assert "no tool named 'read-text'" in problems[1][0]
    assert f"needs image, but {sound.id} is audio" in problems[2][0]
    assert "no input artifact 'image-00000000000000ff' in this session" in problems[3][0]
    assert problems[4] == ()

    first = endpoint.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret"
    assert first["body"]["response_format"]["type"] == "json_schema"  # constrained where the server can
    assert first["body"]["temperature"] == 0
    assert photo.id in first["body"]["messages"][1]["content"] and "receipt.png" in first["body"]["messages"][1]["content"]
    # each repair turn shows the model its reply and the problems found in it
    repair = endpoint.requests[2]["body"]["messages"]
    first_reply = {"tasks": [{"id": "t1", "tool": "read-text", "args": {"image": photo.id}}]}
    assert repair[-2] == {"role": "assistant", "content": json.dumps(first_reply)}
    assert "no tool named 'read-text'" in repair[-1]["content"]


def test_a_plan_that_stays_invalid_is_refused_with_the_last_plan_and_its_problems(endpoint_factory, registry, store):
    cyclic = json.dumps({"tasks": [{"id": "a", "tool": "summarization", "args": {"text": "<b>"}},
                                   {"id": "b", "tool": "summarization", "args": {"text": "<a>"}}]})
    endpoint = endpoint_factory([cyclic, cyclic, cyclic])
    with pytest.raises(PlanningFailedError) as caught:
        planner_for(endpoint, registry, store, max_repairs=2).plan("Summarise it twice")
    assert len(endpoint.requests) == 3
    assert caught.value.last_text == cyclic and any("cycle" in p for p in caught.value.problems)
    assert "no valid plan after 3 attempt(s)" in str(caught.value) and '"summarization"' in str(caught.value)


def test_a_request_needing_no_tool_gets_a_direct_answer(endpoint_factory, registry, store):
    endpoint = endpoint_factory([json.dumps({"tasks": [], "answer": "Paris."})])
    result = planner_for(endpoint, registry, store).plan("What is the capital of France?")
    assert result.plan.answer == "Paris." and result.validated.order == ()


def test_endpoint_failures_are_clear(endpoint_factory, registry, store):
    endpoint = endpoint_factory([(500, "model overloaded")] * 3)
    backend = OpenAICompatibleBackend(endpoint.url, "m", max_retries=2, backoff=0.01)
    with pytest.raises(PlannerBackendError, match="answered HTTP 500: model overloaded"):
        Planner(backend, registry).plan("hello")
    assert len(endpoint.requests) == 3  # the first call and two retries
    refused = endpoint_factory([(400, "bad request")])
    with pytest.raises(PlannerBackendError, match="HTTP 400"):
        Planner(OpenAICompatibleBackend(refused.url, "m", backoff=0.01), registry).plan("hello")
    assert len(refused.requests) == 1  # a client error is not retried
    unreachable = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", timeout=2)
    with pytest.raises(PlannerBackendError, match="unreachable"):
        Planner(unreachable, registry).plan("hello")
    with pytest.raises(InvalidInputError, match="request is empty"):
        planner_for(endpoint, registry, store).plan("   ")


def test_unconstrained_backends_get_no_response_format(endpoint_factory, registry, store):
    endpoint = endpoint_factory([json.dumps({"tasks": [], "answer": "hi"})])
    Planner(OpenAICompatibleBackend(endpoint.url, "m", structured=False), registry).plan("say hi")
    assert "response_format" not in endpoint.requests[0]["body"]


def test_prompt_lists_every_tool_compactly_with_kinds(registry):
    messages = build_messages("caption this", list(registry), [])
    system = messages[0]["content"]
    assert system.count("\n- ") >= len(registry)
    assert "- speech-recognition (audio:audio) -> (text:text, segments:json)" in system
    assert "beam_size=5[1..10]" in system
    assert "Input artifacts:\n(none)" in messages[1]["content"]


@pytest.mark.parametrize("text, expected", [
    ('{"tasks": []}', {"tasks": []}),
    ('Here you go:\n```json\n{"tasks": [], "answer": "x"}\n```\nDone.', {"tasks": [], "answer": "x"}),
    ('The plan is {"tasks": []} as requested.', {"tasks": []}),
])
def test_json_is_found_in_chatty_replies(text, expected):
    assert extract_json(text) == expected


def test_no_json_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        extract_json("I cannot help with that.")


def test_json_planner_shows_demos_as_earlier_turns_in_json(endpoint_factory, registry, store):
    from orchestrator.planning.planner_retrieval import DemoSelector, lexical_embedder, load_demos

    endpoint = endpoint_factory(['{"tasks": [{"id": "t1", "tool": "text-to-speech", "args": {"text": "hi"}}]}'])
    planner = planner_for(endpoint, registry, store, demos=DemoSelector(load_demos(), lexical_embedder()), num_demos=2)
    planner.plan("Read 'hi' out loud")
    messages = endpoint.requests[0]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    for demo_reply in (messages[2]["content"], messages[4]["content"]):
        plan = json.loads(demo_reply)  # demos are rendered in the syntax the planner asks for
        assert plan["tasks"] and all(task["tool"] in registry for task in plan["tasks"])
    assert messages[-1]["content"].endswith("Request: Read 'hi' out loud")


def test_prefer_available_plans_only_with_tools_that_run_here(registry):
    from orchestrator.tooling.tool import Availability

    class Here(registry.get("text-to-speech")):
        name = "speak-here"

        def available(self):
            return Availability(True, "ready")

    class Elsewhere(registry.get("text-to-speech")):
        name = "speak-elsewhere"

        def available(self):
            return Availability(False, "weights not downloaded", summary="weights not here (offline)")

    small = ToolRegistry([Here, Elsewhere])

    class Unused:
        name = "unused"

        def complete(self, messages, *, schema=None):
            raise AssertionError("not called")

    everything = Planner(Unused(), small, demos=None, hints=False)
    assert [t.name for t in everything.tools_for("say hi", [])] == ["speak-elsewhere", "speak-here"]
    preferring = Planner(Unused(), small, demos=None, hints=False, prefer_available=True)
    assert [t.name for t in preferring.tools_for("say hi", [])] == ["speak-here"]
    assert "speak-elsewhere" not in preferring.system_message(preferring.tools_for("say hi", []))["content"]


def test_unasked_trailing_tasks_are_dropped_but_used_or_hinted_ones_kept(registry):
    from orchestrator.planning.plan import Plan, PlanTask
    from orchestrator.planning.planner import drop_unasked_tail

    def plan(*tools_args):
        return Plan(tuple(PlanTask(f"t{i}", tool, args) for i, (tool, args) in enumerate(tools_args, 1)))

    extra = plan(("image-classification", {"image": "image-0123456789abcdef"}),
                 ("image-captioning", {"image": "image-0123456789abcdef"}))
    kept, dropped = drop_unasked_tail(extra, ["image-classification"])
    assert [t.tool for t in kept.tasks] == ["image-classification"] and [t.tool for t in dropped] == ["image-captioning"]
    repeated = plan(("translation", {"text": "hola"}), ("translation", {"text": "<t1>"}))
    assert [t.tool for t in drop_unasked_tail(repeated, ["translation"])[0].tasks] == ["translation"]
    chain = plan(("ocr", {"image": "image-0123456789abcdef"}), ("text-to-speech", {"text": "<t1>"}))
    assert [t.tool for t in drop_unasked_tail(chain, ["ocr"])[1]] == ["text-to-speech"]  # asked for by no clause
    assert drop_unasked_tail(chain, ["ocr", "text-to-speech"])[1] == ()  # as long as the hint: kept
    assert drop_unasked_tail(chain, [])[1] == ()  # no hint: nothing to judge by, nothing dropped
    twice = plan(("text-to-speech", {"text": "bye"}), ("text-to-speech", {"text": "bye"}))
    assert [t.id for t in drop_unasked_tail(twice, [])[1]] == ["t2"]  # an exact repeat goes even without a hint


def test_rate_limits_and_server_errors_are_retried_with_backoff(endpoint_factory, registry):
    endpoint = endpoint_factory([(429, "slow down"), (503, "warming up"), json.dumps({"tasks": [], "answer": "hi"})])
    backend = OpenAICompatibleBackend(endpoint.url, "m", backoff=0.01)
    assert Planner(backend, registry).plan("say hi").plan.answer == "hi"
    assert len(endpoint.requests) == 3


def test_a_streamed_answer_arrives_piece_by_piece(endpoint_factory):
    endpoint = endpoint_factory([("sse", ["The total ", "is 42.50", "."])])
    pieces = []
    text = OpenAICompatibleBackend(endpoint.url, "m").complete([{"role": "user", "content": "total?"}], schema=None,
                                                              on_text=pieces.append, max_new_tokens=20)
    assert text == "The total is 42.50." and pieces == ["The total ", "is 42.50", "."]
    assert endpoint.requests[0]["body"]["stream"] is True and endpoint.requests[0]["body"]["max_tokens"] == 20


def test_planner_settings_choose_the_backend(monkeypatch):
    from orchestrator.config import LLMSettings, Settings
    from orchestrator.errors import ConfigError
    from orchestrator.planning.planner import llm_backend

    monkeypatch.setenv("MY_KEY", "sk-test")
    settings = Settings.from_dict({"planner": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "qwen",
                                               "api_key_env": "MY_KEY", "max_retries": 5}})
    backend = llm_backend(settings.planner)
    assert isinstance(backend, OpenAICompatibleBackend) and backend.api_key == "sk-test" and backend.max_retries == 5
    assert settings.composer is None  # the composer follows the planner unless configured apart
    assert LLMSettings.parse("local:/models/my-llm", "x").model == "/models/my-llm"
    env = Settings.load(env={"ANYMODA_PLANNER": "openai:http://127.0.0.1:9/v1#m", "ANYMODA_HOME": "/tmp/anymoda-x"})
    assert env.planner.backend == "openai" and env.planner.model == "m"
    for bad in ({"backend": "gpt"}, {"backend": "openai", "base_url": "ftp://x", "model": "m"},
                {"backend": "openai", "base_url": "http://x"}, {"api_key_env": "not a name"}, "claude"):
        with pytest.raises(ConfigError):
            Settings.from_dict({"planner": bad})


def test_the_plan_streams_as_the_endpoint_writes_it(endpoint_factory, registry):
    plan = json.dumps({"tasks": [], "answer": "hi"})
    endpoint = endpoint_factory([("sse", [plan[:10], plan[10:]])])
    pieces = []
    result = Planner(OpenAICompatibleBackend(endpoint.url, "m"), registry).plan("say hi", on_text=pieces.append)
    assert result.plan.answer == "hi" and "".join(pieces) == plan and len(pieces) == 2
