"""The local planner backend: a tiny random causal LM under the plan grammar, loaded like real weights."""

from __future__ import annotations

import json

import pytest

from orchestrator import ToolRegistry
from orchestrator.cli.commands import main
from orchestrator.planning.bench_planner import planner_from_spec, run_case, virtual_artifacts
from orchestrator.planning.local_llm import LocalLLMBackend
from orchestrator.planning.plan_metrics import Case, Graph, Node, load_predictions
from orchestrator.planning.planner import Planner, PlanningFailedError
from orchestrator.planning.planner_retrieval import DemoSelector, lexical_embedder, load_demos
from orchestrator.storage.artifacts import Artifact, ArtifactKind

from tiny_llms import CHATML
from tiny_tokenizers import byte_level_bpe

pytest.importorskip("llguidance")



def build_tiny_llm(folder, seed: int):
    """A 1-layer Qwen2 with a ChatML template, saved so it loads through from_pretrained as real weights do."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = byte_level_bpe(400, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tokenizer.chat_template = CHATML
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=True,
    ))
    model.generation_config = GenerationConfig(eos_token_id=0, pad_token_id=0)  # only <|endoftext|>, as Qwen ships
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm") / "qwen2", seed=0)


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


def artifact(kind: str, index: int, name: str) -> Artifact:
    return Artifact(f"{kind}-{index:016x}", ArtifactKind(kind), "application/octet-stream", 1, "", {"name": name})


REQUESTS = [
    ("Describe this photo and read the description aloud.", [artifact("image", 1, "photo.jpg")]),
    ("Transcribe the recording.", [artifact("audio", 2, "talk.wav")]),
    ("Draw a cat on the moon.", []),
    ("Compare the speech with the picture.", [artifact("audio", 3, "a.wav"), artifact("image", 4, "b.png")]),
    ("Describe the trend.", [artifact("time_series", 5, "sales.csv")]),
]


def test_tiny_random_llm_under_the_grammar_always_plans_validly(tmp_path, registry):
    demos = DemoSelector(load_demos(), lexical_embedder())
    tools_used, plans, refused = set(), 0, 0
    for seed in range(4):  # four random models: greedy decoding of one would take the same path every time
        backend = LocalLLMBackend(str(build_tiny_llm(tmp_path / f"llm-{seed}", seed)), quantize="none",
                                  max_new_tokens=1200)
        planner = Planner(backend, registry, demos=demos, num_demos=2, max_tasks=2, max_repairs=0)
        for attempt in range(5):
            request, artifacts = REQUESTS[attempt]
            # Random weights under the grammar: every plan is well-formed and typed on the first try (no repair is
            # allowed). Random text is refused as made up (it is not from the request), never handed out.
            try:
                result = planner.plan(f"{request} (variant {seed}.{attempt})", artifacts=artifacts)
            except PlanningFailedError as failure:
                assert failure.problems and all("not from the request" in p or "not a number" in p
                                                for p in failure.problems), failure.problems
                refused += 1
                continue
            assert result.repairs == 0 and result.syntax == "compact"
            plans += 1
            ids = {a.id for a in artifacts}
            for task in result.plan.tasks:
                tools_used.add(task.tool)
                for value in task.args.values():
                    if isinstance(value, str) and value.split("-")[0] in ("image", "audio", "time_series"):
                        assert value in ids  # never an invented artifact
    assert plans + refused == 20 and plans >= 5
    assert len(tools_used) >= 2  # the random models really did choose among tools


def test_decoder_drafts_and_cache_do_not_change_greedy_output(tiny_llm, registry):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from orchestrator.planning.constrained_decoding import GrammarDecoder
    from orchestrator.planning.plan_syntax import CompactSyntax, plan_inputs

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm)
    prompt = tokenizer("the quick brown fox jumps over the lazy dog the quick brown")["input_ids"]
    reference = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False,
                               eos_token_id=None, pad_token_id=0)[0][len(prompt):].tolist()
    plain = GrammarDecoder(model, tokenizer, draft_tokens=0)
    drafted = GrammarDecoder(model, tokenizer, draft_tokens=6)
    free_plain = plain.generate(prompt, max_new_tokens=40)
    ours = list(free_plain.token_ids)
    assert ours == reference[: len(ours)]  # the same greedy tokens as transformers' generate
    if free_plain.stopped_by == "eos":
        assert reference[len(ours)] in plain.stop_ids
    assert drafted.generate(prompt, max_new_tokens=40).token_ids == free_plain.token_ids

    inputs = plan_inputs([artifact("image", 1, "photo.jpg")])
    syntax = CompactSyntax()
    tools = list(registry)

    def grammar(written):
        return syntax.segment_grammar(tools, inputs, written, max_tasks=2)

    fresh = GrammarDecoder(model, tokenizer, draft_tokens=0)
    first = fresh.generate(prompt, segments=grammar, max_new_tokens=600)
    again = fresh.generate(prompt, segments=grammar, max_new_tokens=600)  # from the cached prefix
    with_drafts = drafted.generate(prompt, segments=grammar, max_new_tokens=600)
    assert first.text == again.text == with_drafts.text
    assert again.prefill_tokens == 1 and first.prefill_tokens == len(prompt)
    assert first.forced_tokens > 0

    # Two prompts taking turns (planner, composer) each keep their cached prefix, and outputs do not change.
    other = tokenizer("a completely different system prompt for writing answers from results")["input_ids"]
    other_first = fresh.generate(other, max_new_tokens=5)
    back = fresh.generate(prompt, segments=grammar, max_new_tokens=600)
    other_again = fresh.generate(other, max_new_tokens=5)
    assert other_first.prefill_tokens == len(other)
    assert back.prefill_tokens == 1 and back.text == first.text
    assert other_again.prefill_tokens == 1 and other_again.token_ids == other_first.token_ids


def test_bench_runs_ours_and_the_naive_baseline_on_a_case_file(tiny_llm, tmp_path, capsys):
    cases = tmp_path / "cases.jsonl"
    lines = [
        {"id": "a", "request": "Describe example.jpg aloud.", "structure": "chain",
         "files": [{"name": "example.jpg", "kind": "image"}],
         "gold": {"nodes": [{"id": "n0", "task": "image-to-text", "args": {"image": "example.jpg"}},
                            {"id": "n1", "task": "text-to-speech", "args": {"text": "<n0>"}}], "links": [["n0", "n1"]]}},
        {"id": "b", "request": "Transcribe example.wav.", "files": [{"name": "example.wav", "kind": "audio"}],
         "gold": {"nodes": [{"id": "n0", "task": "automatic-speech-recognition", "args": {}}], "links": []}},
    ]
    cases.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    predictions = tmp_path / "predictions.jsonl"
    code = main(["bench", "planner", "--cases", str(cases), "--planner", f"local:{tiny_llm}",
                 "--baseline", f"naive:{tiny_llm}", "--save-predictions", str(predictions)])
    assert code == 0
    printed = capsys.readouterr().out
    for metric in ("parse %:", "valid %:", "node F1:", "edge F1:", "exact-graph %:", "mean seconds per plan:",
                   "by structure:", "single (1)", "chain (1)"):
        assert metric in printed
    assert "baseline naive:" in printed
    ours = load_predictions(predictions)
    baseline = load_predictions(tmp_path / "predictions.baseline.jsonl")
    assert set(ours) == set(baseline) == {"a", "b"}
    assert all(p.parsed and p.valid for p in ours.values())  # the grammar guarantees it, even for a random model
    saved = [json.loads(line) for line in predictions.read_text().splitlines()]
    for line in saved:
        assert set(line) >= {"id", "nodes", "links"}
        for node in line["nodes"]:
            assert set(node) == {"id", "task", "args"}
            for value in node["args"].values():  # inputs are written back as the case's file names
                assert not (isinstance(value, str) and value.startswith(("image-", "audio-")))


def test_bench_refuses_bad_specs_and_limits(tiny_llm, tmp_path, registry):
    from orchestrator import InvalidInputError

    with pytest.raises(InvalidInputError, match="unknown planner spec"):
        planner_from_spec("gpt", registry)
    with pytest.raises(InvalidInputError, match="openai:BASE_URL#MODEL"):
        planner_from_spec("openai:http://127.0.0.1:1/v1", registry)
    cases = tmp_path / "c.jsonl"
    cases.write_text('{"id": "x", "request": "hi", "gold": {"nodes": [], "links": []}}\n', encoding="utf-8")
    assert main(["bench", "planner", "--cases", str(cases), "--limit", "0"]) == 2


def test_virtual_artifacts_are_stable_and_typed():
    case = Case("c1", "r", "single", ({"name": "x.jpg", "kind": "image"}, {"name": "y.wav", "kind": "audio"}),
                Graph((Node("n0", "image-to-text"),)))
    first, second = virtual_artifacts(case), virtual_artifacts(case)
    assert [a.id for a in first] == [a.id for a in second]
    assert [a.kind for a in first] == [ArtifactKind.IMAGE, ArtifactKind.AUDIO]
    assert first[0].metadata["name"] == "x.jpg"


def test_unparseable_naive_output_scores_as_unparsed(tiny_llm, registry):
    class Gibberish:
        name = "gibberish"

        def complete(self, messages, *, schema=None):
            return "I think you should use a tool."

    planner = Planner(Gibberish(), registry, syntax="json", constrain=False, max_repairs=0, demos=None)
    case = Case("c", "Describe x.jpg", "single", ({"name": "x.jpg", "kind": "image"},), Graph((Node("n0", "image-to-text"),)))
    result = run_case(planner, case, registry)
    assert not result.parsed and not result.valid and result.predicted is None


def test_int8_quantisation_on_cpu_prints_no_deprecation_notice(tiny_llm):
    # A fresh process: torch emits the notice once per process, so an earlier test could hide it here.
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(1)\n"
            "from orchestrator.planning.local_llm import LocalLLMBackend\n"
            f"backend = LocalLLMBackend({str(tiny_llm)!r}, quantize='int8')\n"
            "linear = backend.decoder.model.model.layers[0].mlp.up_proj\n"
            "print(type(linear).__module__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "quantized" in done.stdout  # the layers really were made int8
    assert "quantize_per_tensor" not in done.stderr
