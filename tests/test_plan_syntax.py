"""The compact plan syntax: parsing, rendering, and the per-line grammar that keeps plans valid."""

from __future__ import annotations

import pytest

from orchestrator import InvalidInputError, ToolRegistry
from orchestrator.storage.artifacts import Artifact, ArtifactKind
from orchestrator.planning.plan import Plan, PlanTask, validate_plan
from orchestrator.planning.plan_syntax import CompactSyntax, first_sentence, plan_inputs
from orchestrator.planning.planner_retrieval import load_demos

from tiny_tokenizers import byte_level_bpe

IMAGE_ID = "image-0123456789abcdef"
AUDIO_ID = "audio-0123456789abcdef"


def artifact(artifact_id: str, name: str | None = None) -> Artifact:
    kind = ArtifactKind(artifact_id.rsplit("-", 1)[0])
    return Artifact(artifact_id, kind, "application/octet-stream", 1, "", {"name": name} if name else {})


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


@pytest.fixture(scope="module")
def matcher_factory():
    """llguidance matchers over a small byte-level BPE: any text can be tokenised, so grammars are tested on text."""
    llguidance = pytest.importorskip("llguidance")
    import llguidance.hf

    tokenizer = byte_level_bpe(400)
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)

    def accepts(grammar: str, text: str, *, complete: bool = True) -> bool:
        matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar))
        assert not matcher.is_error(), matcher.get_error()
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            if not matcher.consume_token(token):
                return False
        return matcher.is_accepting() if complete else True

    return accepts


def test_handles_are_file_names_when_safe_and_unique_else_ids():
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg"), artifact(AUDIO_ID, "my voice.wav"),
                          artifact("image-00000000000000aa", "t1"), artifact("image-00000000000000bb")])
    assert [i.handle for i in inputs] == ["photo.jpg", AUDIO_ID, "image-00000000000000aa", "image-00000000000000bb"]
    duplicated = plan_inputs([artifact(IMAGE_ID, "a.png"), artifact("image-00000000000000aa", "a.png")])
    assert [i.handle for i in duplicated] == [IMAGE_ID, "image-00000000000000aa"]


def test_parse_maps_handles_references_and_literals(registry):
    syntax = CompactSyntax()
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg")])
    plan = syntax.parse('t1 = image-captioning(image=photo.jpg, num_beams=2)\n'
                        't2 = text-to-speech(text=t1.caption, speed=1.5)\n'
                        't3 = translation(text="say \\"hi\\", then stop", target_language="fr")', inputs)
    assert plan.tasks[0] == PlanTask("t1", "image-captioning", {"image": IMAGE_ID, "num_beams": 2})
    assert plan.tasks[1].args == {"text": "<t1.caption>", "speed": 1.5}
    assert plan.tasks[2].args == {"text": 'say "hi", then stop', "target_language": "fr"}
    validate_plan(plan, registry)
    assert syntax.parse('answer("Hello, there.")', inputs) == Plan((), "Hello, there.")
    fenced = syntax.parse("```\nt1 = ocr(image=photo.jpg)\n```", inputs)
    assert fenced.tasks[0].tool == "ocr"


@pytest.mark.parametrize("text, message", [
    ("", "has no plan"),
    ("t1 = ocr image", "line 1"),
    ("t1 = ocr(image=photo.jpg)\nhello", "line 2"),
    ("t1 = ocr(image=elsewhere.png)", "'elsewhere.png' is neither an input"),
    ('t1 = ocr(image=photo.jpg, image=photo.jpg)', "given twice"),
    ('t1 = translation(text="unterminated)', "bad quoted value"),
    ('t1 = translation("no name")', "needs a name"),
    ('answer("a")\nt1 = ocr(image=photo.jpg)', "nothing may follow"),
    # Found by tests/test_fuzz_workflows.py: a RecursionError and a ValueError escaped as themselves.
    ("t1 = ocr(image=" + "[" * 5000 + "]" * 5000 + ")", "line 1: the value at column 7 is nested too deeply"),
    ("t1 = summarization(text=t0, num_beams=" + "9" * 5000 + ")", "line 1: the number at column 20 has 5000"),
    ("t1 = ocr(image=" + "x" * 5000 + ")", r"'x{60}'… \(5000 characters\) is neither an input"),
])
def test_parse_refuses_malformed_lines_by_number(text, message):
    with pytest.raises(InvalidInputError, match=message):
        CompactSyntax().parse(text, plan_inputs([artifact(IMAGE_ID, "photo.jpg")]))


def test_render_round_trips(registry):
    syntax = CompactSyntax()
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg")])
    text = 't1 = ocr(image=photo.jpg)\nt2 = summarization(text=t1, num_beams=2)\nt3 = text-to-speech(text=t2)'
    plan = syntax.parse(text, inputs)
    assert syntax.render(plan, {IMAGE_ID: "photo.jpg"}) == text
    assert syntax.parse(syntax.render(Plan((), 'He said "no".')), inputs).answer == 'He said "no".'


def test_first_line_grammar_offers_only_tools_whose_inputs_exist(registry, matcher_factory):
    syntax = CompactSyntax()
    tools = list(registry)
    image_only = plan_inputs([artifact(IMAGE_ID, "photo.jpg")])
    grammar = syntax.segment_grammar(tools, image_only, "")
    assert matcher_factory(grammar, "t1 = image-captioning(image=photo.jpg)\n")
    assert matcher_factory(grammar, 't1 = text-to-speech(text="hello there")\n')
    assert matcher_factory(grammar, "t1 = ocr(image=photo.jpg)")  # the last line needs no newline
    assert matcher_factory(grammar, 'answer("hi")')
    assert not matcher_factory(grammar, "t1 = speech-recognition(audio=photo.jpg)", complete=False)  # no audio here
    assert not matcher_factory(grammar, "t1 = image-captioning(image=other.jpg)", complete=False)  # invented file
    assert not matcher_factory(grammar, "t1 = image-captioning(image=t1)", complete=False)  # no earlier task
    assert not matcher_factory(grammar, "t2 = ocr(image=photo.jpg)", complete=False)  # numbered in order
    assert not matcher_factory(grammar, "t1 = ocr(image=photo.jpg, colour=1)", complete=False)  # unknown argument
    assert not matcher_factory(grammar, 't1 = text-to-speech(text="line\nbreak")', complete=False)


def test_later_lines_reference_earlier_outputs_of_the_right_kind(registry, matcher_factory):
    syntax = CompactSyntax()
    tools = list(registry)
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg")])
    written = "t1 = image-captioning(image=photo.jpg)\nt2 = depth-estimation(image=photo.jpg)\n"
    grammar = syntax.segment_grammar(tools, inputs, written)
    assert matcher_factory(grammar, "t3 = text-to-speech(text=t1)\n")
    assert matcher_factory(grammar, "t3 = text-to-speech(text=t1.caption)\n")
    assert matcher_factory(grammar, "t3 = image-captioning(image=t2.visualization)\n")
    assert matcher_factory(grammar, "")  # the plan may end here
    assert not matcher_factory(grammar, "t3 = text-to-speech(text=t2", complete=False)  # t2 makes images
    assert not matcher_factory(grammar, "t3 = image-captioning(image=t1", complete=False)  # t1 makes text
    # depth-estimation has two image outputs: the bare id would be ambiguous, so it is not offered.
    assert not matcher_factory(grammar, "t3 = image-captioning(image=t2)\n")
    assert not matcher_factory(grammar, "t3 = text-to-speech(text=t3)", complete=False)  # not earlier
    assert not matcher_factory(grammar, 'answer("x")', complete=False)  # only a whole plan may be an answer
    assert syntax.segment_grammar(tools, inputs, 'answer("hi")') is None


def test_every_plan_the_grammar_accepts_for_a_chain_validates(registry):
    syntax = CompactSyntax()
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg"), artifact(AUDIO_ID, "talk.wav")])
    text = ("t1 = speech-recognition(audio=talk.wav)\nt2 = image-editing(image=photo.jpg, instruction=t1)\n"
            "t3 = image-captioning(image=t2)\nt4 = sentence-similarity(source=t3, sentences=t1)")
    validated = validate_plan(syntax.parse(text, inputs), registry)
    assert validated.order == ("t1", "t2", "t3", "t4")
    assert validated.dependencies["t4"] == frozenset({"t1", "t3"})


def test_first_sentence_keeps_abbreviations_and_numbers_whole():
    assert first_sentence("Find boxes (e.g. cars). Then more.") == "Find boxes (e.g. cars)."
    assert first_sentence("Speak text aloud; returns audio.") == "Speak text aloud;"
    assert first_sentence("No full stop") == "No full stop"


def test_shipped_demos_are_valid_plans_over_the_registry(registry):
    demos = load_demos()
    assert len(demos) >= 40
    syntax = CompactSyntax()
    used = set()
    for demo in demos:
        plan = syntax.parse(demo.plan, demo.inputs())
        if plan.tasks:
            validate_plan(plan, registry)
        used.update(demo.tools)
    # Demos show most tools at least once, so the model sees how each is called.
    assert len(used) >= 0.8 * len(registry)


def test_bad_demo_file_is_refused_with_its_line(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text('{"request": "x", "files": [], "plan": "t1 = ocr(image=nowhere.png)"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"demos.jsonl:1: the demo's plan does not parse"):
        load_demos(path)
    path.write_text('{"request": "x"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"demos.jsonl:1: a demo needs"):
        load_demos(path)


def test_grammar_bounds_small_integer_params_and_choices(registry, matcher_factory):
    grammar = CompactSyntax().segment_grammar(list(registry), plan_inputs([artifact(IMAGE_ID, "p.jpg")]), "")
    assert matcher_factory(grammar, "t1 = image-classification(image=p.jpg, top_k=5)\n")
    assert not matcher_factory(grammar, "t1 = image-classification(image=p.jpg, top_k=500)", complete=False)
    assert matcher_factory(grammar, 't1 = depth-estimation(image=p.jpg, colormap="magma")\n')
    assert not matcher_factory(grammar, 't1 = depth-estimation(image=p.jpg, colormap="pink")', complete=False)


def test_grammar_leaves_out_repeats_and_self_feeding(registry, matcher_factory):
    syntax = CompactSyntax()
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg"), artifact("image-00000000000000aa", "other.jpg")])
    written = "t1 = image-captioning(image=photo.jpg)\nt2 = summarization(text=t1)\n"
    grammar = syntax.segment_grammar(list(registry), inputs, written)
    assert not matcher_factory(grammar, "t3 = image-captioning(image=photo.jpg", complete=False)  # same input again
    assert matcher_factory(grammar, "t3 = image-captioning(image=other.jpg)\n")
    assert not matcher_factory(grammar, "t3 = summarization(text=t2", complete=False)  # its own output
    assert matcher_factory(grammar, 't3 = summarization(text="a literal may repeat")\n')
    assert matcher_factory(grammar, "t3 = text-to-speech(text=t2)\n")
    assert syntax.segment_grammar(list(registry), inputs, written, max_tasks=2) is None


def test_sampling_controls_are_not_offered_to_the_planner(registry, matcher_factory):
    grammar = CompactSyntax().segment_grammar(list(registry), plan_inputs([artifact(IMAGE_ID, "p.jpg")]), "")
    assert not matcher_factory(grammar, "t1 = image-captioning(image=p.jpg, seed=7", complete=False)
    assert not matcher_factory(grammar, 't1 = chat(message="hi", temperature=0.5', complete=False)
    assert matcher_factory(grammar, "t1 = image-captioning(image=p.jpg, num_beams=2)\n")


def test_a_chosen_sequence_lets_each_line_call_only_its_tool_and_ends_after_the_last(registry, matcher_factory):
    syntax = CompactSyntax()
    tools = list(registry)
    inputs = plan_inputs([artifact(AUDIO_ID, "talk.wav")])
    sequence = ["speech-recognition", "summarization"]
    first = syntax.segment_grammar(tools, inputs, "", sequence=sequence)
    assert matcher_factory(first, "t1 = speech-recognition(audio=talk.wav)\n")
    assert not matcher_factory(first, "t1 = speech-recognition(audio=talk.wav)", complete=True)  # more must follow
    assert not matcher_factory(first, "t1 = voice-activity-detection(audio=talk.wav)", complete=False)
    assert not matcher_factory(first, 'answer("x")', complete=False)
    second = syntax.segment_grammar(tools, inputs, "t1 = speech-recognition(audio=talk.wav)\n", sequence=sequence)
    assert matcher_factory(second, "t2 = summarization(text=t1)")
    assert not matcher_factory(second, "t2 = translation(text=t1)", complete=False)
    assert not matcher_factory(second, "")  # the chosen tools are all called
    done = "t1 = speech-recognition(audio=talk.wav)\nt2 = summarization(text=t1)"
    assert syntax.segment_grammar(tools, inputs, done, sequence=sequence) is None


def test_a_chosen_tool_that_cannot_be_fed_falls_back_to_every_tool(registry, matcher_factory):
    syntax = CompactSyntax()
    inputs = plan_inputs([artifact(IMAGE_ID, "photo.jpg")])
    grammar = syntax.segment_grammar(list(registry), inputs, "", sequence=["speech-recognition"])  # no audio here
    assert matcher_factory(grammar, "t1 = ocr(image=photo.jpg)")


def test_answer_only_grammar_allows_just_a_direct_answer(registry, matcher_factory):
    syntax = CompactSyntax()
    grammar = syntax.segment_grammar(list(registry), [], "", answer_only=True)
    assert matcher_factory(grammar, 'answer("You first asked about the receipt.")')
    assert not matcher_factory(grammar, 't1 = text-to-speech(text="hi")', complete=False)
    assert syntax.segment_grammar(list(registry), [], 'answer("x")', answer_only=True) is None
