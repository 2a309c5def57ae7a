"""The tool selector: clause probabilities, the kind-feasible sequence, training, and literal provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator import ToolRegistry
from orchestrator.errors import InvalidInputError
from orchestrator.planning.plan import Plan, PlanTask, literal_provenance_problems
from orchestrator.planning.planner_retrieval import NO_TOOL, lexical_embedder
from orchestrator.planning.tool_selection import (
    HEAD_FILE,
    SelectorHead,
    ToolSelector,
    embedding_text,
    load_head,
    train_head,
    train_tool_selector,
    training_examples,
)
from orchestrator.storage.artifacts import ArtifactKind


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


@pytest.fixture()
def phrases(tmp_path):
    data = {"_none": ["I have a recording", "I have a photo"],
            "speech-recognition": ["transcribe the recording", "write down what is said"],
            "summarization": ["summarize the text", "make it shorter"],
            "text-to-speech": ["read the text aloud", "say it out loud"],
            "speech-enhancement": ["enhance the audio quality", "remove the noise"],
            "image-to-image": ["enhance the image quality", "restyle the picture"]}
    path = tmp_path / "phrases.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_clauses_map_to_tools_in_order_and_scene_setting_asks_for_nothing(registry, phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=phrases)
    selection = selector.select("I have a recording x.wav. Transcribe the recording, then summarize the text, "
                                "and read the text aloud", [ArtifactKind.AUDIO])
    assert selection.tools == ("speech-recognition", "summarization", "text-to-speech")
    assert selection.labels[0] == NO_TOOL
    assert selector.select("hello", []).tools == ()


def test_a_tool_is_chosen_only_where_its_input_kind_can_exist(registry, phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=phrases)
    # "enhance the quality" is as close to image enhancement as to audio enhancement; only audio is here.
    assert selector.select("enhance the quality", [ArtifactKind.AUDIO]).tools == ("speech-enhancement",)
    assert selector.select("enhance the quality", [ArtifactKind.IMAGE]).tools == ("image-to-image",)
    # Speech made by an earlier step can be transcribed even with nothing attached.
    assert selector.select("read the text aloud, then transcribe the recording", []).tools == \
        ("text-to-speech", "speech-recognition")
    assert selector.select("transcribe the recording", []).tools == ()


def test_the_same_tool_twice_in_a_row_is_one_step(registry, phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=phrases)
    assert selector.select("transcribe the recording, then write down what is said", [ArtifactKind.AUDIO]).tools == \
        ("speech-recognition",)


def test_quoted_text_does_not_drown_the_ask():
    assert embedding_text("summarize this: 'a very long paragraph about many things'") == "summarize this: '...'"


def test_head_training_learns_separable_classes_and_resumes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    vectors = np.vstack([centre + 0.1 * rng.normal(size=(20, 16)) for centre in centres])
    labels = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    losses = []
    head = train_head(vectors, labels, epochs=200, progress=lambda e, n, loss: losses.append(loss))
    assert losses[-1] < losses[0] / 4
    assert [head.labels[i] for i in head.probabilities(vectors).argmax(axis=1)] == labels
    resumed = train_head(vectors, labels, epochs=1, start=head)
    assert np.allclose(resumed.probabilities(vectors), head.probabilities(vectors), atol=0.05)


def test_training_command_path_writes_a_head_the_selector_uses(registry, phrases, tmp_path):
    out = tmp_path / "head.npz"
    stages = []
    report = train_tool_selector(lexical_embedder(), out, phrases_file=phrases, epochs=150, cache_dir=tmp_path / "cache",
                                 progress=lambda stage, done, total, loss: stages.append(stage))
    assert out.is_file() and report.examples == len(training_examples(phrases)) and report.train_accuracy > 0.9
    assert {"embedding", "training"} <= set(stages)
    head = load_head(out)
    assert set(head.labels) == {NO_TOOL, "speech-recognition", "summarization", "text-to-speech", "speech-enhancement",
                                "image-to-image"}
    selector = ToolSelector(list(registry), lexical_embedder(), head=head)
    assert selector.select("please transcribe the recording", [ArtifactKind.AUDIO]).tools == ("speech-recognition",)
    # A second run embeds nothing again: every text is in the cache.
    stages.clear()
    train_tool_selector(lexical_embedder(), out, phrases_file=phrases, epochs=5, cache_dir=tmp_path / "cache",
                        progress=lambda stage, done, total, loss: stages.append(stage))
    assert "embedding" not in stages


def test_a_damaged_head_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "head.npz"
    bad.write_bytes(b"not a head")
    with pytest.raises(InvalidInputError, match="not a tool selector head"):
        SelectorHead.load(bad)


def test_the_shipped_head_knows_every_builtin_tool(registry):
    head = load_head(HEAD_FILE)
    assert head is not None and set(registry.names()) <= set(head.labels) and NO_TOOL in head.labels


def test_literals_must_come_from_the_request_or_the_conversation(registry):
    plan = Plan((PlanTask("t1", "text-to-speech", {"text": "Our team finished the project two weeks early."}),))
    problems = literal_provenance_problems(plan, registry, ["now say that out loud", ""])
    assert len(problems) == 1 and problems[0].task == "t1" and problems[0].argument == "text"
    assert "not from the request" in str(problems[0])
    assert literal_provenance_problems(plan, registry, ["now say that out loud",
                                                        "assistant: Our team finished the project two weeks early."]) == []
    quoted = Plan((PlanTask("t1", "translation", {"text": "I love cheese", "target_language": "fr"}),))
    assert literal_provenance_problems(quoted, registry, ["translate 'I love cheese' into French"]) == []
    # References and file ids are not literals.
    chained = Plan((PlanTask("t1", "ocr", {"image": "image-0123456789abcdef"}),
                    PlanTask("t2", "text-to-speech", {"text": "<t1.text>"})))
    assert literal_provenance_problems(chained, registry, ["read it"]) == []


def test_a_text_that_only_points_back_is_the_previous_answer(registry):
    from orchestrator.planning.plan import instruction_only
    from orchestrator.planning.planner import pointing_texts_resolved
    from orchestrator.storage.artifacts import Artifact

    for pointer in ("ok say that out loud", "Read it back to me, please!", "now say it again", "draw it"):
        assert instruction_only(pointer), pointer
    for content in ("say hello world out loud", "the total is 22.83", "read me the tax", "", "thank you"):
        assert not instruction_only(content), content
    assert instruction_only("fine") and instruction_only("fine, do it instead")  # "fine, write a poem about it"
    assert not instruction_only("alright then", ['say "alright then" out loud'])  # quoted: the words wanted
    echoed = Plan((PlanTask("t1", "text-to-speech", {"text": "ok say that out loud"}),))
    # Without an answer to point at, the plan is refused (and repaired by the planner) rather than spoken.
    problems = literal_provenance_problems(echoed, registry, ["ok say that out loud", ""])
    assert [(p.task, p.argument) for p in problems] == [("t1", "text")] and "only says what to do" in problems[0].message
    previous = Artifact(id="text-0123456789abcdef", kind=ArtifactKind.TEXT, mime="text/plain", size=4, sha256="0" * 64,
                        metadata={"name": "previous_answer"})
    resolved = pointing_texts_resolved(echoed, registry, [previous])
    assert resolved.tasks[0].args == {"text": "text-0123456789abcdef"}
    assert literal_provenance_problems(resolved, registry, ["ok say that out loud", ""]) == []
    said = Plan((PlanTask("t1", "text-to-speech", {"text": "say hello world"}),))
    assert pointing_texts_resolved(said, registry, [previous]) == said  # it has words of its own


def test_a_chart_drawn_earlier_is_not_offered_beside_its_series():
    from orchestrator.planning.planner import without_charts_of_held_data
    from orchestrator.storage.artifacts import Artifact

    def made(kind, id_, parents=(), **metadata):
        return Artifact(id=id_, kind=kind, mime="x", size=1, sha256="0" * 64, metadata=metadata, parents=parents)

    series = made(ArtifactKind.TIME_SERIES, "time_series-0000000000000001", from_earlier_turn=True)
    chart = made(ArtifactKind.IMAGE, "image-0000000000000002", (series.id,), from_earlier_turn=True, output="plot")
    photo = made(ArtifactKind.IMAGE, "image-0000000000000003", from_earlier_turn=True)
    new_chart = made(ArtifactKind.IMAGE, "image-0000000000000004", (series.id,))  # sent with this request: kept
    assert without_charts_of_held_data([series, chart, photo, new_chart]) == [series, photo, new_chart]
    assert without_charts_of_held_data([chart, photo]) == [chart, photo]  # its series is not offered: keep it


def test_numbers_in_settings_must_be_ones_the_user_gave(registry):
    guessed = Plan((PlanTask("t1", "time-series-description", {"series": "time_series-0123456789abcdef", "period": 200}),))
    problems = literal_provenance_problems(guessed, registry, ["Describe the trend of this series and plot it"])
    assert [(p.task, p.argument) for p in problems] == [("t1", "period")]
    assert literal_provenance_problems(guessed, registry, ["the cycle is 200 steps long"]) == []
    # In a conversation the assistant's own words ("200 daily points") describe; only the user's choose.
    talk = ["can you plot it", "User: how are my sales?\nAssistant: 200 daily points, rising."]
    assert literal_provenance_problems(guessed, registry, talk) == []  # the old, looser rule
    problems = literal_provenance_problems(guessed, registry, talk, number_sources=["how are my sales?", "can you plot it"])
    assert [(p.task, p.argument) for p in problems] == [("t1", "period")] and "the user gave" in problems[0].message


def test_the_grammar_offers_numeric_settings_only_from_numbers_the_request_holds(registry):
    from orchestrator.planning.plan_syntax import CompactSyntax, PlanInput, numbers_in

    inputs = [PlanInput("sales.csv", "time_series-0123456789abcdef", ArtifactKind.TIME_SERIES)]
    tools = [registry.get("time-series-description")]
    silent = CompactSyntax().segment_grammar(tools, inputs, "", numbers=numbers_in("describe the trend"))
    assert "period=" not in silent
    given = CompactSyntax().segment_grammar(tools, inputs, "", numbers=numbers_in("the cycle is 24 steps; describe it"))
    assert '"24"' in given and "period=" in given
    assert numbers_in("top 3 at 0.5, file v2.wav") == ["3", "0.5"]


def test_text_tools_need_a_text_to_work_on(registry, tmp_path):
    from orchestrator.planning.tool_selection import has_text_body

    phrases = {"_none": ["I have a photo"], "summarization": ["analyze it", "summarize the text"],
               "depth-estimation": ["make a depth map"]}
    path = tmp_path / "phrases.json"
    path.write_text(json.dumps(phrases), encoding="utf-8")
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=path)
    assert selector.select("make a depth map, then analyze it", [ArtifactKind.IMAGE]).tools == ("depth-estimation",)
    assert selector.select("analyze it: 'the budget grew by ten percent this year'", []).tools == ("summarization",)
    assert has_text_body("summarize: the meeting covered the budget and hiring") and not has_text_body("summarize it")


def test_dropping_tasks_takes_their_dependants_along():
    from orchestrator.planning.planner import without_tasks

    plan = Plan((PlanTask("t1", "ocr", {"image": "image-0123456789abcdef"}),
                 PlanTask("t2", "summarization", {"text": "made up"}),
                 PlanTask("t3", "text-to-speech", {"text": "<t2.summary>"}),
                 PlanTask("t4", "text-to-speech", {"text": "<t1.text>"})))
    kept, dropped = without_tasks(plan, {"t2"})
    assert [t.id for t in kept.tasks] == ["t1", "t4"] and [t.id for t in dropped] == ["t2", "t3"]


def test_a_file_that_came_with_the_request_is_read_by_some_tool(registry, phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=phrases)
    # "read the text aloud" alone speaks; with a recording attached, something must read the recording first.
    assert selector.select("read the text aloud", [ArtifactKind.TEXT]).tools == ("text-to-speech",)
    with_audio = selector.select("read the text aloud", [ArtifactKind.AUDIO], [ArtifactKind.AUDIO]).tools
    assert len(with_audio) == 2 and with_audio[1] == "text-to-speech"
    assert ArtifactKind.AUDIO in {spec.kind for spec in registry.get(with_audio[0]).inputs.values()}


def test_chosen_tools_are_wired_by_kind_when_the_llm_cannot_fill_them(registry):
    from orchestrator.planning.plan import validate_plan
    from orchestrator.planning.planner import skeleton_plan
    from orchestrator.storage.artifacts import Artifact

    audio = Artifact("audio-0123456789abcdef", ArtifactKind.AUDIO, "audio/wav", 1, "", {"name": "example.wav"})
    tools = [registry.get(n) for n in ("speech-recognition", "text-to-video", "named-entity-recognition")]
    plan = skeleton_plan(tools, [audio], "describe the scene in example.wav as a video and tag its entities")
    assert [t.args for t in plan.tasks] == [{"audio": audio.id}, {"prompt": "<t1.text>"}, {"text": "<t1.text>"}]
    validate_plan(plan, registry)
    quoted = skeleton_plan([registry.get("translation")], [], "translate 'good morning' into German")
    assert quoted.tasks[0].args == {"text": "good morning"}
    assert skeleton_plan([registry.get("ocr")], [], "read the sign") is None  # no image to read


def test_a_planner_whose_llm_keeps_making_text_up_falls_back_to_the_wired_tools(registry):
    from orchestrator.planning.planner import Planner
    from orchestrator.storage.artifacts import Artifact

    class MakesTextUp:
        name = "scripted"
        accepts_grammar = True

        def complete(self, messages, *, schema=None, grammar=None, stop_bias=None, **_):
            return 't1 = speech-recognition(audio=example.wav)\nt2 = text-to-video(prompt="a description nobody gave")'

    audio = Artifact("audio-0123456789abcdef", ArtifactKind.AUDIO, "audio/wav", 1, "", {"name": "example.wav"})
    planner = Planner(MakesTextUp(), registry, demos=None, embedder=lexical_embedder(), max_repairs=1)
    planner.hint = lambda request, tools, kinds=(), new_kinds=(), traits=(): ["speech-recognition", "text-to-video"]
    result = planner.plan("turn example.wav into a video", artifacts=[audio])
    assert result.wired and [t.tool for t in result.plan.tasks] == ["speech-recognition", "text-to-video"]
    assert result.plan.tasks[1].args == {"prompt": "<t1.text>"}


def test_files_from_earlier_turns_are_not_new_inputs():
    from orchestrator.planning.planner import is_new_input
    from orchestrator.storage.artifacts import Artifact

    def image(**metadata):
        return Artifact("image-0123456789abcdef", ArtifactKind.IMAGE, "image/png", 1, "", metadata)

    assert is_new_input(image(name="receipt.png"))
    assert not is_new_input(image(name="receipt.png", from_earlier_turn=True))  # a file the user sent before
    assert not is_new_input(image(name="earlier_image")) and not is_new_input(image(name="previous_answer"))


@pytest.fixture()
def looking_phrases(tmp_path):
    """Phrasings where the words alone pick a tool that looks at the wrong thing."""
    data = {"_none": ["I have a photo", "hello"],
            "image-captioning": ["which place is this from", "describe the picture"],
            "object-detection": ["list the things in the picture"],
            "document-question-answering": ["what is the total on the document"],
            "ocr": ["read the text in the image"],
            "voice-activity-detection": ["what time does the speech start"],
            "audio-classification": ["what does the caller want"],
            "speech-recognition": ["transcribe the recording"],
            "text-to-speech": ["say it out loud"],
            "chat": ["reply to the message"]}
    path = tmp_path / "phrases.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_what_an_attached_file_is_decides_which_tool_reads_it(registry, looking_phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=looking_phrases)
    image, audio = [ArtifactKind.IMAGE], [ArtifactKind.AUDIO]
    # Over a photo the words decide; over a receipt (a document) questions go to document QA, the text to OCR.
    assert selector.select("which place is this from?", image, image, ["photo"]).tools == ("image-captioning",)
    assert selector.select("which place is this from?", image, image, ["document"]).tools == ("document-question-answering",)
    assert selector.select("list the things in the picture", image, image, ["document"]).tools == ("document-question-answering",)
    assert selector.select("read the text in the image", image, image, ["document"]).tools == ("ocr",)
    # Over speech, a question about it is answered from the transcript.
    assert selector.select("what does the caller want?", audio, audio, ["speech"]).tools == ("speech-recognition",)
    assert selector.select("what time does the speech start?", audio, audio, ["speech"]).tools == ("speech-recognition",)
    assert selector.select("what does the caller want?", audio, audio, ["sound"]).tools == ("audio-classification",)
    # A file nothing was chosen for is read by its trait's reader.
    assert selector.select("I have a photo of it too", audio, audio, ["speech"]).tools == ("speech-recognition",)


def test_asking_to_hear_the_answer_adds_speech(registry, looking_phrases):
    selector = ToolSelector(list(registry), lexical_embedder(), phrases_file=looking_phrases)
    assert selector.select("reply to the message, read it to me out loud", []).tools == ("chat", "text-to-speech")
    assert selector.select("reply to the message aloud", []).tools[-1] == "text-to-speech"
    assert selector.select("reply to the message", []).tools == ("chat",)


def test_traits_from_what_the_tools_read():
    from orchestrator.planning.attachment_traits import document_traits, speech_traits

    receipt = "CORNER SHOP\n12/01/2025\nMilk 1.20\nBread 2.10\nTOTAL 3.30\nThank you"
    assert document_traits(receipt) == {"document"}
    assert document_traits("STOP") == {"photo"} and document_traits("") == {"photo"}
    assert document_traits("OPEN\n24 h") == {"photo"}  # a shop sign in a street photo
    assert speech_traits([{"start": 0.2, "end": 2.8}], 3.0) == {"speech"}
    assert speech_traits([{"start": 4.0, "end": 4.4}], 10.0) == {"sound"}
    assert speech_traits([], 0.0) == {"sound"}


def test_a_plugin_the_trained_head_never_saw_can_be_chosen(registry, phrases, tmp_path):
    """A head trained on the built-in tools must not lock plugins out: a plugin is known by its phrasings and
    description (nearest-phrasing vote), and wins where its words fit."""
    from orchestrator.tooling.tool import Input, Output, WeightlessTool

    class ReceiptItems(WeightlessTool):
        name = "receipt-items"
        task = "receipt-parsing"
        description = "List the items on a receipt with their prices. Returns JSON."
        inputs = {"text": Input(ArtifactKind.TEXT, "the receipt's text")}
        outputs = {"items": Output(ArtifactKind.JSON, "the items")}
        default_model = "regex"
        phrasings = ("list the receipt items with their prices", "which items are on the receipt")

    out = tmp_path / "head.npz"
    train_tool_selector(lexical_embedder(), out, phrases_file=phrases, epochs=150)
    selector = ToolSelector([*registry, ReceiptItems], lexical_embedder(), head=load_head(out))
    assert "receipt-items" in selector.labels
    assert selector.select("please list the receipt items with their prices", []).tools == ("receipt-items",)
    # The built-in tools the head knows are chosen as before.
    assert selector.select("please transcribe the recording", [ArtifactKind.AUDIO]).tools == ("speech-recognition",)
