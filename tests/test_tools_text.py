"""Text experts on tiny random checkpoints saved with save_pretrained: the same from_pretrained path as hub weights.

A MarianTokenizer (and M2M100Tokenizer) needs SentencePiece model files that a tiny checkpoint would have
to ship: the Marian models below carry a byte-level BPE tokenizer instead, which exercises the MarianMT
model, the generation and the language handling; NLLB's tokenizer is tokenizers-based and is built for real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator import InvalidInputError, ModelPool, run_tool
from tools.text import (
    Chat,
    NamedEntityRecognition,
    QuestionAnswering,
    Summarization,
    TextGeneration,
    Translation,
    _eos_ids,
    pack_sentences,
    parse_history,
)

from conftest import requires_offline_extra
from tiny_llms import CHATML
from tiny_tokenizers import CORPUS, bert_tokenizer, byte_level_bpe

ARTICLE = (
    "The meeting moved to Friday because the report was late. The quick brown fox jumps over the lazy dog. "
    "A dog runs across the green field with a ball. The sound of rain on a tin roof and distant thunder. "
) * 3
TINY = dict(encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=32)


def all_tools():
    from tools.tabular import TabularClassification

    return [Summarization, Translation, QuestionAnswering, NamedEntityRecognition, TextGeneration, Chat, TabularClassification]


def test_cards_are_valid_json_schema_and_accept_their_defaults():
    import jsonschema

    for tool in all_tools():
        card = tool.card()
        jsonschema.Draft202012Validator.check_schema(card["arguments_schema"])
        example = {name: "some text" if spec["kind"] in ("text", "json") else f"{spec['kind']}-0123456789abcdef"
                   for name, spec in card["inputs"].items() if spec["required"]}
        example.update({name: schema["default"] for name, schema in card["params"].items()})
        jsonschema.validate(example, card["arguments_schema"])
        assert tool().check_params({}) == {name: spec.default for name, spec in tool.params.items()}
        assert card["default_model"] and card["task"] and len(card["description"]) > 80


@pytest.fixture
def pool() -> ModelPool:
    return ModelPool(2**32)


def seq2seq_tokenizer(**kwargs):
    """Byte-level BPE with BART's special tokens at BART's ids (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    base = byte_level_bpe(special_tokens=("<s>", "<pad>", "</s>", "<unk>"))
    return type(base)(tokenizer_object=base._tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                      unk_token="<unk>", **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny checkpoint, built once for the module (each < 0.5 s)."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tk_models
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertForQuestionAnswering,
        BertForTokenClassification,
        GenerationConfig,
        M2M100Config,
        M2M100ForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        NllbTokenizer,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text-models")
    paths: dict[str, Path] = {}

    tokenizer = seq2seq_tokenizer()
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2, **TINY,
    ))
    # bart-large-cnn's generation settings, which the tool must override with its own bounds.
    bart.generation_config = GenerationConfig(min_length=56, max_length=142, num_beams=4, no_repeat_ngram_size=3,
                                              length_penalty=2.0, early_stopping=True, decoder_start_token_id=2,
                                              bos_token_id=0, eos_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
                                              pad_token_id=1)
    paths["bart"] = root / "bart"
    bart.save_pretrained(paths["bart"])
    tokenizer.save_pretrained(paths["bart"])

    marian_config = dict(max_position_embeddings=64, pad_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                         decoder_vocab_size=None, share_encoder_decoder_embeddings=True, **TINY)
    paths["marian"] = root / "marian-en-de"
    fixed = seq2seq_tokenizer(source_lang="en", target_lang="de")  # as opus-mt tokenizer_config.json records them
    MarianMTModel(MarianConfig(vocab_size=len(fixed), **marian_config)).save_pretrained(paths["marian"])
    fixed.save_pretrained(paths["marian"])

    paths["marian-multi"] = root / "marian-en-mul"
    multi = seq2seq_tokenizer()
    multi.add_special_tokens({"additional_special_tokens": [">>deu<<", ">>fra<<"]})
    MarianMTModel(MarianConfig(vocab_size=len(multi), **marian_config)).save_pretrained(paths["marian-multi"])
    multi.save_pretrained(paths["marian-multi"])

    # NLLB: a Metaspace BPE vocabulary wrapped in the real (tokenizers-based) NllbTokenizer.
    bpe = Tokenizer(tk_models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    nllb_tokenizer = NllbTokenizer(vocab=model["vocab"], merges=merges, src_lang="eng_Latn",
                                   additional_special_tokens=["eng_Latn", "fra_Latn", "deu_Latn"])
    paths["nllb"] = root / "nllb"
    M2M100ForConditionalGeneration(M2M100Config(
        vocab_size=len(nllb_tokenizer), max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, **TINY,
    )).save_pretrained(paths["nllb"])
    nllb_tokenizer.save_pretrained(paths["nllb"])

    bert = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    paths["qa"] = root / "bert-qa"
    vocab = len(bert_tokenizer(paths["qa"]))
    BertForQuestionAnswering(BertConfig(vocab_size=vocab, **bert)).save_pretrained(paths["qa"])

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    paths["ner"] = root / "bert-ner"
    bert_tokenizer(paths["ner"])
    ner_config = BertConfig(vocab_size=vocab, id2label=dict(enumerate(labels)),
                            label2id={label: i for i, label in enumerate(labels)}, **bert)
    BertForTokenClassification(ner_config).save_pretrained(paths["ner"])

    chat_tokenizer = byte_level_bpe(special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    chat_tokenizer.chat_template = CHATML
    paths["qwen"] = root / "qwen2"
    qwen = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(chat_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
    ))
    # Qwen2.5-Instruct's generation config: sampling on, and only <|endoftext|> (id 0) named as eos here so the
    # tool must find <|im_end|> itself.
    qwen.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, eos_token_id=0,
                                              pad_token_id=0)
    qwen.save_pretrained(paths["qwen"])
    chat_tokenizer.save_pretrained(paths["qwen"])
    return paths


# ----------------------------------------------------------------------------------------- summarization


def test_summarization_bounds_the_summary_and_chunks_long_text(models, settings, store, pool):
    tool = Summarization(model=str(models["bart"]), settings=settings, pool=pool)
    reports = []
    tool.progress_callback = lambda done, total, message: reports.append((done, total))
    run = run_tool(tool, {"text": ARTICLE, "max_tokens": 12, "min_tokens": 4, "num_beams": 2}, store=store)
    summary = run.values["summary"]
    meta = run.outputs["summary"].metadata
    assert isinstance(summary, str) and summary
    # The window is 128 positions, so the ~420-token article needs several chunks, each summarised in <= 12 tokens.
    assert 1 < meta["chunks"] <= 8 and meta["window_tokens"] <= 128 and not meta["truncated"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["bart"])
    assert len(tokenizer(summary, add_special_tokens=False)["input_ids"]) <= 12 * meta["chunks"] + meta["chunks"]
    assert reports[-1] == (meta["chunks"], meta["chunks"])

    truncated = tool(text=ARTICLE, max_tokens=12, min_tokens=0, num_beams=1, long_input="truncate")["summary"]
    assert isinstance(truncated, str)
    run = run_tool(tool, {"text": ARTICLE, "max_tokens": 8, "min_tokens": 0, "max_chunks": 1}, store=store)
    assert run.outputs["summary"].metadata["truncated"] and "note" in run.outputs["summary"].metadata


def test_summarization_refuses_bad_params(models, settings, pool):
    tool = Summarization(model=str(models["bart"]), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="min_tokens"):
        tool(text=ARTICLE, max_tokens=10, min_tokens=20)
    with pytest.raises(InvalidInputError, match="num_beams"):
        tool(text=ARTICLE, num_beams=0)
    with pytest.raises(InvalidInputError, match="'text' is empty"):
        tool(text="   ")
    with pytest.raises(InvalidInputError, match="long_input"):
        tool(text=ARTICLE, long_input="ignore")


def test_pack_sentences_keeps_sentences_whole_and_within_budget():
    def count(text):
        return len(text.split())

    chunks = pack_sentences("One two three. Four five. Six seven eight nine ten eleven. Twelve.", 4, count)
    assert all(count(chunk) <= 4 for chunk in chunks)
    assert chunks[:2] == ["One two three.", "Four five."]
    assert " ".join(chunks).split() == "One two three. Four five. Six seven eight nine ten eleven. Twelve.".split()


# ----------------------------------------------------------------------------------------- translation


def test_translation_with_a_fixed_pair_marian_model(models, settings, store, pool):
    tool = Translation(model=str(models["marian"]), settings=settings, pool=pool)
    text = "The house is wonderful.\n\nThe dog runs across the green field."
    run = run_tool(tool, {"text": text, "max_tokens": 6, "num_beams": 2, "target_language": "de"}, store=store)
    out = run.values["translation"]
    assert isinstance(out, str) and out.count("\n") == 2  # the paragraph break survives
    meta = run.outputs["translation"].metadata
    assert (meta["source_language"], meta["target_language"]) == ("en", "de") and meta["chunks"] == 2
    with pytest.raises(InvalidInputError, match="target_language.*only en -> de"):
        tool(text=text, target_language="fr")
    spelled = run_tool(tool, {"text": text, "target_language": "deu", "max_tokens": 3}, store=store)
    assert "could not be checked" in spelled.outputs["translation"].metadata["note"]


# Run where sentencepiece is absent: transformers decides which tokenizer classes exist when it is
# imported, so the package is hidden (None in sys.modules: find_spec and import both fail) before that.
WITHOUT_SENTENCEPIECE = """
import sys
sys.modules["sentencepiece"] = None
from orchestrator.config import Settings
from orchestrator.errors import ToolUnavailableError
from tools.text import Translation
settings = Settings.from_dict({"home": sys.argv[2], "offline": True, "device": "cpu"})
try:
    Translation(model=sys.argv[1], settings=settings)(text="hello")
except ToolUnavailableError as exc:
    print("ToolUnavailableError:", exc)
"""


def test_a_sentencepiece_tokenizer_without_sentencepiece_says_what_to_install(models, tmp_path):
    """Real opus-mt checkpoints ship a MarianTokenizer (source.spm/target.spm), which needs sentencepiece
    (a core dependency, so the machine running this test has it: the child process hides it)."""
    import subprocess
    import sys

    folder = tmp_path / "opus-mt-like"
    folder.mkdir()
    (folder / "config.json").write_text((models["marian"] / "config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", WITHOUT_SENTENCEPIECE, str(folder), str(tmp_path / "home")],
                           cwd=repo, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"})
    assert child.returncode == 0, child.stderr[-3000:]
    message = child.stdout.strip()
    assert message.startswith("ToolUnavailableError: tool 'translation': the tokenizer of"), message
    assert "needs the Python package sentencepiece; install it with pip install sentencepiece" in message


def test_translation_multilingual_models_need_and_validate_language_codes(models, settings, store, pool):
    multi = Translation(model=str(models["marian-multi"]), settings=settings, pool=pool)
    assert isinstance(multi(text="The house is wonderful.", target_language="fra", max_tokens=5)["translation"], str)
    with pytest.raises(InvalidInputError, match="'target_language' is required"):
        multi(text="The house is wonderful.")
    with pytest.raises(InvalidInputError, match="'spa' is not a language code"):
        multi(text="The house is wonderful.", target_language="spa")

    nllb = Translation(model=str(models["nllb"]), settings=settings, pool=pool)
    run = run_tool(nllb, {"text": "the house is wonderful", "source_language": "eng_Latn", "target_language": "fra_Latn",
                          "max_tokens": 5, "num_beams": 1}, store=store)
    assert run.outputs["translation"].metadata["target_language"] == "fra_Latn"
    with pytest.raises(InvalidInputError, match=r"'fr' is not a language code.*fra_Latn"):
        nllb(text="the house", source_language="eng_Latn", target_language="fr")
    with pytest.raises(InvalidInputError, match="source_language"):
        nllb(text="the house", source_language="english", target_language="fra_Latn")


def test_translation_forces_the_target_language_token_first(models):
    """NLLB's output must start with the target language: the tool passes it as forced_bos_token_id."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tools.text import _Loaded

    tokenizer = AutoTokenizer.from_pretrained(models["nllb"])
    model = AutoModelForSeq2SeqLM.from_pretrained(models["nllb"]).eval()
    tool = Translation(model=str(models["nllb"]))
    loaded = _Loaded(model, tokenizer, "cpu", None, {"src_lang": tokenizer.src_lang})
    prefix, extra, meta = tool._plan_languages(loaded, {"source_language": "deu_Latn", "target_language": "fra_Latn"})
    assert extra == {"forced_bos_token_id": tokenizer.convert_tokens_to_ids("fra_Latn")}
    assert tokenizer.convert_ids_to_tokens(tokenizer("the house")["input_ids"])[0] == "deu_Latn"
    encoded = tokenizer(["the house"], return_tensors="pt")
    output = model.generate(**encoded, max_new_tokens=4, **extra)
    assert tokenizer.convert_ids_to_tokens(output[0].tolist())[1] == "fra_Latn"
    tool._plan_languages(loaded, {"source_language": None, "target_language": "fra_Latn"})
    assert tokenizer.src_lang == "eng_Latn"  # a call without a source language gets the default, not the last one


# ----------------------------------------------------------------------------------------- question answering


def test_question_answering_returns_a_span_of_the_context(models, settings, store, pool):
    tool = QuestionAnswering(model=str(models["qa"]), settings=settings, pool=pool)
    context = "The eagle sits on a branch. " * 30  # ~210 tokens: several windows of 64
    run = run_tool(tool, {"question": "where is the eagle?", "context": context, "max_seq_length": 64,
                          "doc_stride": 16, "top_k": 3, "max_answer_tokens": 5, "allow_no_answer": False}, store=store)
    result = run.values["result"]
    assert result["windows"] > 3 and result["has_answer"]
    assert 1 <= len(result["candidates"]) <= 3
    for candidate in result["candidates"]:
        assert 0 <= candidate["start"] < candidate["end"] <= len(context)
        assert context[candidate["start"]:candidate["end"]] == candidate["answer"]
        assert 0 < candidate["score"] <= 1
    scores = [c["score"] for c in result["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert run.values["answer"] == result["answer"] == result["candidates"][0]["answer"]
    assert run.outputs["answer"].metadata["start"] == result["start"]


def test_question_answering_no_answer_and_bad_input(models, settings, pool):
    tool = QuestionAnswering(model=str(models["qa"]), settings=settings, pool=pool)
    out = tool(question="where is the eagle?", context="the eagle sits on a branch", allow_no_answer=True)
    result = out["result"]
    # Either outcome is legitimate for a random model, but it must follow the scores.
    if result["has_answer"]:
        assert result["score"] >= result["no_answer_score"]
    else:
        assert out["answer"] == "" and result["start"] is None and result["no_answer_score"] >= result["candidates"][0]["score"]
    with pytest.raises(InvalidInputError, match="'question' is empty"):
        tool(question=" ", context="the eagle sits on a branch")
    with pytest.raises(InvalidInputError, match="max_seq_length"):
        tool(question="where?", context="here", max_seq_length=8)


# ----------------------------------------------------------------------------------------- named entities


def test_named_entities_are_spans_of_the_text(models, settings, store, pool):
    tool = NamedEntityRecognition(model=str(models["ner"]), settings=settings, pool=pool)
    text = "The quick brown fox jumps over the lazy dog in Berlin. " * 20  # longer than 128 positions: windows
    run = run_tool(tool, {"text": text, "min_score": 0.0}, store=store)
    entities = run.values["entities"]
    assert entities and all(e["label"] in {"PER", "LOC"} for e in entities)
    assert max(e["end"] for e in entities) > 400  # the text past the first window was read too
    for entity in entities:
        assert 0 <= entity["start"] < entity["end"] <= len(text)
        assert text[entity["start"]:entity["end"]] == entity["text"]
    assert run.outputs["entities"].metadata["count"] == len(entities)
    assert run.values["text"].splitlines() == [f"{e['text']} ({e['label']})" for e in entities]
    strict = tool(text=text, min_score=0.99)["entities"]
    assert all(e["score"] >= 0.99 for e in strict) and len(strict) <= len(entities)
    with pytest.raises(InvalidInputError, match="aggregation"):
        tool(text=text, aggregation="none")


# ----------------------------------------------------------------------------------------- generation


def test_text_generation_is_bounded_and_reproducible(models, settings, store, pool):
    tool = TextGeneration(model=str(models["qwen"]), settings=settings, pool=pool)
    first = run_tool(tool, {"prompt": "hello", "max_new_tokens": 12, "seed": 7}, store=store)
    meta = first.outputs["text"].metadata
    assert meta["new_tokens"] <= 12 and meta["sampling"] and meta["chat_template"] and meta["seed"] == 7
    assert meta["finish_reason"] in ("stop", "length")
    again = run_tool(tool, {"prompt": "hello", "max_new_tokens": 12, "seed": 7}, store=store)
    assert again.values["text"] == first.values["text"]
    others = {tool(prompt="hello", max_new_tokens=12, seed=seed, temperature=1.5)["text"] for seed in (1, 2, 3)}
    assert len(others) > 1  # sampling follows the seed
    greedy = {tool(prompt="hello", max_new_tokens=6, seed=seed, temperature=0)["text"] for seed in (1, 2)}
    assert len(greedy) == 1
    raw = run_tool(tool, {"prompt": "the quick brown fox", "max_new_tokens": 5, "use_chat_template": False}, store=store)
    assert raw.outputs["text"].metadata["chat_template"] is False and raw.outputs["text"].metadata["new_tokens"] <= 5


def test_text_generation_refuses_bad_params(models, settings, pool):
    tool = TextGeneration(model=str(models["qwen"]), settings=settings, pool=pool)
    for arguments, name in (({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 10**6}, "max_new_tokens"),
                            ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"seed": -3}, "seed")):
        with pytest.raises(InvalidInputError, match=name):
            tool(prompt="hello", **arguments)
    with pytest.raises(InvalidInputError, match="'prompt' is empty"):
        tool(prompt="")
    with pytest.raises(InvalidInputError, match="context of 256 tokens"):
        tool(prompt="hello " * 100, max_new_tokens=200)


def test_generation_stops_at_the_chat_templates_end_of_turn(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["qwen"])
    model = AutoModelForCausalLM.from_pretrained(models["qwen"])
    eos = _eos_ids(model, tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos and 0 in eos


def test_chat_uses_the_template_and_returns_the_conversation(models, settings, store, pool):
    tool = Chat(model=str(models["qwen"]), settings=settings, pool=pool)
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    run = run_tool(tool, {"message": "what is the total?", "history": history, "system_prompt": "be brief",
                          "max_new_tokens": 8, "seed": 3}, store=store)
    reply = run.values["reply"]
    conversation = run.values["conversation"]
    assert [m["role"] for m in conversation] == ["system", "user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == "be brief" and conversation[-1]["content"] == reply
    meta = run.outputs["reply"].metadata
    # The prompt is the ChatML rendering: system + 3 turns + the assistant header.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["qwen"])
    rendered = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    assert meta["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert meta["new_tokens"] <= 8
    same = tool(message="what is the total?", history=json.dumps(history), system_prompt="be brief", max_new_tokens=8, seed=3)
    assert same["reply"] == reply  # history as JSON text works too, and the seed makes it reproducible
    # The conversation feeds the next turn.
    follow = tool(message="thanks", history=conversation, max_new_tokens=4)
    assert len(follow["conversation"]) == len(conversation) + 2


def test_chat_drops_the_oldest_turns_when_the_context_is_full(models, settings, store, pool):
    tool = Chat(model=str(models["qwen"]), settings=settings, pool=pool)
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": "the quick brown fox jumps " * 3} for i in range(12)]
    run = run_tool(tool, {"message": "hello", "history": history, "max_new_tokens": 40}, store=store)
    meta = run.outputs["reply"].metadata
    assert meta["dropped_messages"] > 0 and meta["prompt_tokens"] + 40 <= 256


@pytest.mark.parametrize(
    "history, message",
    [
        ({"role": "user"}, "must be a list"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user", "content": ""}], "non-empty"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "only the first"),
        ([{"role": "user", "text": "a"}], "'role' and 'content'"),
        ("[{", "not valid JSON"),
    ],
)
def test_chat_history_is_validated(history, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_history(history, "chat")


def test_chat_refuses_a_model_without_a_chat_template(models, settings, pool, tmp_path):
    import shutil

    folder = tmp_path / "base-model"
    shutil.copytree(models["qwen"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tool = Chat(model=str(folder), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="no chat template"):
        tool(message="hello")
    plain = TextGeneration(model=str(folder), settings=settings, pool=pool)(prompt="hello", max_new_tokens=3)
    assert isinstance(plain["text"], str)


# ----------------------------------------------------------------------------------------- tabular classification

CSV = "name,city,price\nAlice,Paris,12.50\n\nBob,\"Berlin,\nMitte\",7.25\nCarol,Madrid,30.00\n"


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tabular-models")
    # BERT's default init (std 0.02) gives every input nearly the same logits; wide weights tell rows apart.
    bert = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                initializer_range=0.3)
    paths = {}
    for name, labels in (("nli", ["contradiction", "neutral", "entailment"]), ("trained", ["cheap", "expensive"])):
        paths[name] = root / name
        vocab = len(bert_tokenizer(paths[name]))
        BertForSequenceClassification(BertConfig(vocab_size=vocab, id2label=dict(enumerate(labels)),
                                                 label2id={label: i for i, label in enumerate(labels)}, **bert)
                                      ).save_pretrained(paths[name])
    return paths


def test_csv_tables_are_parsed_with_their_line_numbers():
    from tools.tabular import table_from_csv

    table = table_from_csv("t", CSV, header=True, delimiter="auto")
    assert table.columns == ["name", "city", "price"]
    assert table.rows == [["Alice", "Paris", "12.50"], ["Bob", "Berlin,\nMitte", "7.25"], ["Carol", "Madrid", "30.00"]]
    assert table.lines == [2, 4, 6]  # the blank line 3 is skipped; Bob's quoted cell spans lines 4-5
    assert table.serialise(0) == "name: Alice; city: Paris; price: 12.50"
    semicolons = table_from_csv("t", "a;b\n1;2\n3;4", header=True, delimiter="auto")
    assert semicolons.columns == ["a", "b"] and semicolons.rows[1] == ["3", "4"]
    headless = table_from_csv("t", "1,2\n3,4,\n", header=False, delimiter="comma")  # a trailing comma is no cell
    assert headless.columns == ["column 1", "column 2"] and headless.rows == [["1", "2"], ["3", "4"]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,city,price\nAlice,Paris,12.50\n\nBob,Berlin\n", r"line 4 has 2 cell\(s\) but the header \(line 1\) has 3"),
        ("", "the table is empty"),
        ("name,city\n", r"no data rows \(only a header\)"),
        ("n\n" + "x\n" * 501, "501 data rows, over the limit of 500 .*line 502"),
    ],
)
def test_bad_csv_tables_are_refused_naming_the_line(text, message):
    from tools.tabular import table_from_csv

    with pytest.raises(InvalidInputError, match=message):
        table_from_csv("t", text, header=True, delimiter="auto")


def test_json_tables_in_three_shapes():
    from tools.tabular import table_from_json

    sparse = table_from_json("t", [{"name": "Alice", "age": 30}, {"name": "Bob", "city": "Rome"}], header=True)
    assert sparse.columns == ["name", "age", "city"] and sparse.rows == [["Alice", "30", ""], ["Bob", "", "Rome"]]
    split = table_from_json("t", {"columns": ["a", "b"], "rows": [[1, None], [2, 3]]}, header=True)
    assert split.rows == [["1", ""], ["2", "3"]]
    with pytest.raises(InvalidInputError, match=r"row 3 has 1 cell\(s\) but the header \(row 1\) has 2"):
        table_from_json("t", [["a", "b"], [1, 2], [3]], header=True)
    with pytest.raises(InvalidInputError, match="row 2 is str"):
        table_from_json("t", [["a"], "oops"], header=True)


def test_ocr_boxes_become_rows_and_columns():
    from tools.tabular import table_from_boxes

    # A title, the header, a row whose city the OCR split in two boxes, and a row with its middle cell missing.
    boxes = [(10, -40, 300, -20),
             (10, 10, 60, 30), (200, 12, 250, 31), (400, 10, 450, 30),
             (10, 60, 70, 80), (200, 61, 240, 80), (245, 60, 290, 81), (400, 60, 460, 80),
             (10, 110, 55, 130), (402, 111, 445, 129)]
    texts = ["Prices 2024", "name", "city", "price", "Carol", "New", "York", "30.00", "Dan", "1.00"]
    grid, caption = table_from_boxes(boxes, texts)
    assert grid == [["name", "city", "price"], ["Carol", "New York", "30.00"], ["Dan", "", "1.00"]]
    assert caption == ["Prices 2024"]
    assert table_from_boxes([], []) == ([], [])


def test_tabular_zero_shot_matches_the_nli_computation(classifiers, settings, store, pool):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tools.tabular import TabularClassification

    tool = TabularClassification(model=str(classifiers["nli"]), settings=settings, pool=pool)
    # Labels made of the tiny vocabulary's words, so that each hypothesis tokenizes differently.
    labels = ["a cat", "the dog", "rain"]
    run = run_tool(tool, {"table": CSV, "labels": ", ".join(labels), "hypothesis_template": "This is {}."}, store=store)
    predictions = run.values["predictions"]
    assert [p["line"] for p in predictions] == [2, 4, 6] and [p["row"] for p in predictions] == [1, 2, 3]
    for p in predictions:
        assert p["label"] in labels and p["score"] == max(p["scores"].values())
        assert len(set(p["scores"].values())) == 3
        assert sum(p["scores"].values()) == pytest.approx(1, abs=1e-3)  # one label per row: scores share the mass
    assert run.values["table"]["columns"] == ["name", "city", "price"]
    assert run.values["summary"].startswith("Classified 3 row(s): ") and "line 4: " in run.values["summary"]

    # The same numbers by hand: entailment logits of (row, hypothesis) pairs, softmaxed over the labels.
    tokenizer = AutoTokenizer.from_pretrained(classifiers["nli"])
    model = AutoModelForSequenceClassification.from_pretrained(classifiers["nli"]).eval()
    hypotheses = [f"This is {label}." for label in labels]
    encoded = tokenizer([predictions[0]["text"]] * 3, hypotheses, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**encoded).logits[:, 2].softmax(-1)
    assert [predictions[0]["scores"][label] for label in labels] == pytest.approx(expected.tolist(), abs=1e-4)

    multi = tool(rows=[{"name": "Alice", "price": 12.5}], labels="a cat\nthe dog", multi_label=True)["predictions"]
    assert len(multi) == 1 and all(0 <= s <= 1 for s in multi[0]["scores"].values())
    assert sum(multi[0]["scores"].values()) != pytest.approx(1, abs=1e-3)  # each label scored on its own


def test_tabular_trained_classifier_and_refusals(classifiers, settings, pool):
    from tools.tabular import TabularClassification

    trained = TabularClassification(model=str(classifiers["trained"]), settings=settings, pool=pool)
    out = trained(rows=[["name", "price"], ["Alice", 12.5], ["Bob", 99]])
    assert [p["label"] in {"cheap", "expensive"} for p in out["predictions"]] == [True, True]
    with pytest.raises(InvalidInputError, match="own labels \\(cheap, expensive\\)"):
        trained(table=CSV, labels="a, b")

    nli = TabularClassification(model=str(classifiers["nli"]), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="'labels' is empty"):
        nli(table=CSV)
    with pytest.raises(InvalidInputError, match="hypothesis_template"):
        nli(table=CSV, labels="a, b", hypothesis_template="no placeholder")
    with pytest.raises(InvalidInputError, match="exactly one of the inputs"):
        nli(table=CSV, rows=[{"a": 1}], labels="a, b")
    with pytest.raises(InvalidInputError, match="line 4 has 2"):
        nli(table="name,city,price\nAlice,Paris,12.50\n\nBob,Berlin\n", labels="a, b")


@requires_offline_extra
def test_tabular_reads_a_table_picture_with_ocr(classifiers, settings, store, pool):
    from PIL import Image, ImageDraw, ImageFont

    from tools.tabular import TabularClassification

    cells = [["name", "city", "price"], ["Alice", "Paris", "12.50"], ["Bob", "Berlin", "7.25"], ["Carol", "Madrid", "30.00"]]
    font = ImageFont.load_default(size=28)
    width, height = 180, 56
    image = Image.new("RGB", (width * 3 + 20, height * len(cells) + 20), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(cells):
        for c, text in enumerate(row):
            x, y = 10 + c * width, 10 + r * height
            draw.rectangle([x, y, x + width, y + height], outline="black", width=2)
            draw.text((x + 14, y + 12), text, fill="black", font=font)
    tool = TabularClassification(model=str(classifiers["nli"]), settings=settings, pool=pool)
    run = run_tool(tool, {"image": store.put_value("image", image).id, "labels": "cheap, expensive"}, store=store)
    assert run.values["table"] == {"columns": cells[0], "rows": cells[1:], "source": "image"}
    assert [p["text"] for p in run.values["predictions"]][1] == "name: Bob; city: Berlin; price: 7.25"
    assert "picture row 3" in run.values["summary"]
