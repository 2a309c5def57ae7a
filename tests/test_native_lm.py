"""MultimodalLM and its checkpoints with tiny random LLMs loaded through from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from orchestrator.errors import InvalidInputError
from orchestrator.native.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    load_multimodal_lm,
    read_metadata,
    save_checkpoint,
)
from orchestrator.native.connectors import build_connector
from orchestrator.native.encoders import MediaFeatures
from orchestrator.native.multimodal_lm import IGNORE_INDEX, PLACEHOLDERS, Example, MultimodalLM, escape_placeholders

from tiny_llms import save_tiny_chat_qwen2
from tiny_tokenizers import byte_level_bpe

HIDDEN = 32
# Weights 10x larger than the usual 0.02: at the default scale a random 2-layer LLM's predictions barely depend
# on its input at all, so no connector could lower its loss.
INIT_RANGE = 0.2
FEATURE_DIMS = {"image": 16, "audio": 12, "ts": 8}
CONNECTOR_OPTIONS = {"qformer": {"num_queries": 4, "depth": 1, "heads": 4},
                     "perceiver": {"num_latents": 3, "depth": 1, "heads": 4}}
ALL_KINDS = ["linear", "mlp2x_gelu", "qformer", "perceiver"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama without a chat template (prompts become 'prompt\\nresponse')."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = byte_level_bpe()
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=INIT_RANGE, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 whose tokenizer has a ChatML chat template, like the packaged Qwen2.5."""
    return save_tiny_chat_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), hidden_size=HIDDEN, seed=1,
                                initializer_range=INIT_RANGE, max_position_embeddings=256)


def load_llm(folder: Path, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), AutoTokenizer.from_pretrained(folder)


def build_model(folder: Path, kinds: dict[str, str], *, seed: int = 0, **model_options) -> MultimodalLM:
    llm, tokenizer = load_llm(folder)
    torch.manual_seed(seed)
    connectors = {modality: build_connector(kind, FEATURE_DIMS[modality], HIDDEN, **CONNECTOR_OPTIONS.get(kind, {}))
                  for modality, kind in kinds.items()}
    return MultimodalLM(llm, tokenizer, connectors, **model_options)


def media(modality: str, tokens: int, *, real: int | None = None, seed: int = 0, prefix: str = "") -> MediaFeatures:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tokens, FEATURE_DIMS[modality], generator=generator)
    mask = None
    if real is not None:
        mask = torch.arange(tokens) < real
    return MediaFeatures(modality, features, mask, prefix)


def mixed_examples() -> list[Example]:
    """Different prompt lengths, several media of different modalities per prompt, masked features."""
    return [
        Example("look at <image> and listen to <audio>, then compare with <image>. what is it?",
                [media("image", 5, seed=1), media("audio", 7, real=4, seed=2), media("image", 3, seed=3)],
                "a cat on a sofa"),
        Example("<ts> trend?", [media("ts", 6, real=5, seed=4, prefix="[series: offset 1.5] ")], "up"),
        Example("no media here, just text", [], "the quick brown fox"),
    ]


def per_example_losses(output, labels: torch.Tensor) -> torch.Tensor:
    logits = output.logits[:, :-1].float()
    targets = labels[:, 1:]
    token_losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (targets != IGNORE_INDEX).sum(dim=1)
    return token_losses.sum(dim=1) / counted


# ----------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_collate_shapes_labels_and_media_positions(llama_dir: Path, kind: str) -> None:
    model = build_model(llama_dir, {"image": kind, "audio": kind, "ts": kind})
    examples = mixed_examples()
    batch = model.collate(examples)
    input_ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert input_ids.shape == labels.shape == attention.shape == batch["position_ids"].shape
    tokenizer = model.tokenizer
    lengths = attention.sum(dim=1)
    assert int(lengths.max()) == input_ids.shape[1]
    for row, example in enumerate(examples):
        length = int(lengths[row])
        assert bool(attention[row, :length].all()) and not bool(attention[row, length:].any())  # right padding
        assert torch.equal(batch["position_ids"][row, :length], torch.arange(length))
        # Labels: the response and EOS exactly, at the end of the real tokens; -100 everywhere else.
        target = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert labels[row, length - len(target):length].tolist() == target
        assert bool((labels[row, :length - len(target)] == IGNORE_INDEX).all())
        assert bool((labels[row, length:] == IGNORE_INDEX).all())

    # Every media item reserves exactly its connector's output length, inside its own row's prompt.
    expected_counts = {"image": [], "audio": [], "ts": []}
    for row, example in enumerate(examples):
        for item in example.media:
            real = int(item.mask.sum()) if item.mask is not None else item.features.shape[0]
            count = CONNECTOR_OPTIONS[kind]["num_queries" if kind == "qformer" else "num_latents"] \
                if kind in CONNECTOR_OPTIONS else real
            expected_counts[item.modality].append((row, count))
    width = input_ids.shape[1]
    all_positions = []
    for modality, rows_and_counts in expected_counts.items():
        packed = batch["media"][modality]
        assert packed["features"].shape[0] == len(rows_and_counts)
        assert packed["mask"].shape == packed["features"].shape[:2]
        positions = packed["positions"].tolist()
        assert len(positions) == sum(count for _, count in rows_and_counts)
        start = 0
        for row, count in rows_and_counts:
            mine = positions[start:start + count]
            start += count
            assert all(p // width == row for p in mine)
            assert all(labels.view(-1)[p] == IGNORE_INDEX and attention.view(-1)[p] == 1 for p in mine)
        all_positions += positions
    assert len(set(all_positions)) == len(all_positions)
    assert batch["media"]["audio"]["mask"][0].tolist() == [True] * 4 + [False] * 3
    # The series' prefix text is in the prompt, just before its media positions.
    ts_start = batch["media"]["ts"]["positions"][0].item() % width
    assert tokenizer.decode(input_ids[1, :ts_start]).endswith("[series: offset 1.5] ")


@pytest.mark.parametrize("kind", ["mlp2x_gelu", "perceiver"])
def test_media_positions_hold_connector_outputs(llama_dir: Path, kind: str) -> None:
    model = build_model(llama_dir, {"image": kind, "audio": kind, "ts": kind}).eval()
    batch = model.collate(mixed_examples())
    embeds = model.embed(batch)
    table = model.llm.get_input_embeddings()
    flat = embeds.view(-1, HIDDEN)
    media_positions = set()
    for modality, packed in batch["media"].items():
        connector = model.connectors[modality]
        output = connector(packed["features"], packed["mask"])
        expected = output[connector.output_mask(packed["mask"], packed["features"].shape[1]).expand(output.shape[0], -1)]
        torch.testing.assert_close(flat[packed["positions"]], expected)
        media_positions |= set(packed["positions"].tolist())
    text = [p for p in range(flat.shape[0]) if p not in media_positions]
    torch.testing.assert_close(flat[text], table(batch["input_ids"].view(-1)[text]))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_loss_is_the_same_alone_and_inside_a_padded_batch(llama_dir: Path, kind: str) -> None:
    model = build_model(llama_dir, {"image": kind, "audio": kind, "ts": kind}).eval()
    examples = mixed_examples()
    with torch.no_grad():
        batch = model.collate(examples)
        together = per_example_losses(model(batch), batch["labels"])
        for row, example in enumerate(examples):
            alone_batch = model.collate([example])
            alone = model(alone_batch)
            torch.testing.assert_close(together[row], alone.loss, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(per_example_losses(alone, alone_batch["labels"])[0], alone.loss)


@pytest.mark.parametrize("folder_fixture", ["llama_dir", "qwen_dir"])
def test_batched_greedy_generation_equals_each_example_alone(request, folder_fixture: str) -> None:
    model = build_model(request.getfixturevalue(folder_fixture), {"image": "qformer", "ts": "mlp2x_gelu"}).eval()
    examples = [
        Example("describe <image> please, in a few words, and also the <ts>",
                [media("image", 6, seed=5), media("ts", 9, real=7, seed=6)]),
        Example("<ts>?", [media("ts", 4, seed=7)]),
    ]
    batch = model.collate(examples, for_generation=True)
    assert not bool(batch["attention_mask"][1, 0]) and bool(batch["attention_mask"][:, -1].all())  # left padding
    together = model.generate(examples, max_new_tokens=8)
    alone = [model.generate([example], max_new_tokens=8)[0] for example in examples]
    assert together == alone
    assert any(text for text in together)  # a comparison of two empty strings would prove nothing
    assert len(together) == 2


def test_chat_template_wraps_the_prompt(qwen_dir: Path) -> None:
    model = build_model(qwen_dir, {"image": "linear"})
    batch = model.collate([Example("what is <image>?", [media("image", 2)], "a dog")])
    text = model.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert text.startswith("<|im_start|>user\nwhat is ")
    assert "?<|im_end|>\n<|im_start|>assistant\na dog<|im_end|>" in text
    assert batch["labels"][0, -1].item() == model.tokenizer.eos_token_id


# ----------------------------------------------------------------------------------- invalid input
def test_placeholder_count_and_order_must_match_the_media(llama_dir: Path) -> None:
    model = build_model(llama_dir, {"image": "linear", "ts": "linear"})
    with pytest.raises(InvalidInputError, match=r"2 media placeholders \['image', 'image'\] but 1 media items"):
        model.collate([Example("<image> and a literal <image>", [media("image", 2)], "x")])
    with pytest.raises(InvalidInputError, match="0 media placeholders"):
        model.collate([Example("no slot", [media("image", 2)], "x")])
    with pytest.raises(InvalidInputError, match=r"order \['ts', 'image'\] but the media items are \['image', 'ts'\]"):
        model.collate([Example("<ts> <image>", [media("image", 2), media("ts", 3)], "x")])
    # A user's literal placeholder, escaped, is plain text and no longer a media slot.
    user_text = escape_placeholders("my file is called <image> and <ts>")
    assert "<image>" not in user_text and "<ts>" not in user_text
    batch = model.collate([Example(user_text + " <image>", [media("image", 2)], "x")])
    assert batch["media"]["image"]["positions"].numel() == 2


@pytest.mark.parametrize(("example", "message"), [
    (Example("<audio>", [media("audio", 2)], "x"), "no connector for modality 'audio'"),
    (Example("<image>", [MediaFeatures("image", torch.randn(3, 5))], "x"), r"features must be \[tokens>0, 16\]"),
    (Example("<image>", [MediaFeatures("image", torch.randn(3, 16), torch.zeros(3, dtype=torch.bool))], "x"),
     "marks no feature token as real"),
    (Example("<image>", [MediaFeatures("image", torch.randn(3, 16), prefix_text="see <image>")], "x"),
     "prefix text contains a media placeholder"),
    (Example("<image>", [media("image", 2)]), "training needs a response"),
    (Example("<image>", ["not features"], "x"), "expected MediaFeatures"),
])
def test_bad_examples_are_named(llama_dir: Path, example: Example, message: str) -> None:
    model = build_model(llama_dir, {"image": "linear"})
    with pytest.raises(InvalidInputError, match=message):
        model.collate([example])


def test_connector_width_must_match_the_llm(llama_dir: Path) -> None:
    llm, tokenizer = load_llm(llama_dir)
    with pytest.raises(InvalidInputError, match="outputs 48-wide tokens but the LLM's embeddings are 32-wide"):
        MultimodalLM(llm, tokenizer, {"image": build_connector("linear", 16, 48)})
    with pytest.raises(InvalidInputError, match="unknown modality 'video'"):
        MultimodalLM(llm, tokenizer, {"video": build_connector("linear", 16, HIDDEN)})


# ----------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stage1_steps_lower_the_loss_and_leave_the_llm_alone(llama_dir: Path, kind: str) -> None:
    model = build_model(llama_dir, {"image": kind, "audio": kind, "ts": kind})
    model.freeze_llm()
    trainable = model.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in model.connectors.parameters()}
    llm_before = {name: p.detach().clone() for name, p in model.llm.named_parameters()}
    batch = model.collate(mixed_examples())
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(torch.equal(p, llm_before[name]) for name, p in model.llm.named_parameters())


def test_stage2_lora_trains_connectors_and_adapters_only(qwen_dir: Path) -> None:
    model = build_model(qwen_dir, {"image": "mlp2x_gelu", "ts": "qformer"})
    model.freeze_llm()
    model.enable_lora(r=4, alpha=8, dropout=0.0)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    connector_names = {f"connectors.{name}" for name, _ in model.connectors.named_parameters()}
    lora_names = names - connector_names
    assert connector_names <= names
    assert lora_names and all(".lora_A." in name or ".lora_B." in name for name in lora_names)
    # "all-linear": attention and MLP projections of both layers, never the output head or embeddings.
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora_names} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in name or "embed_tokens" in name for name in lora_names)
    batch = model.collate(mixed_examples()[1:])
    model(batch).loss.backward()
    lora_b = [p for name, p in model.named_parameters() if ".lora_B." in name]
    assert all(p.grad is not None for p in lora_b) and any(p.grad.abs().sum() > 0 for p in lora_b)
    with pytest.raises(InvalidInputError, match="already enabled"):
        model.enable_lora()


def test_bfloat16_llm_gets_bfloat16_connectors(llama_dir: Path) -> None:
    llm, tokenizer = load_llm(llama_dir, dtype=torch.bfloat16)
    model = MultimodalLM(llm, tokenizer, {"ts": build_connector("perceiver", 8, HIDDEN, num_latents=2, heads=4)})
    assert next(model.connectors.parameters()).dtype == torch.bfloat16
    batch = model.collate(mixed_examples()[1:2])  # float32 features, cast on the fly
    assert batch["media"]["ts"]["features"].dtype == torch.float32
    output = model(batch)
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    assert len(model.generate(mixed_examples()[1:2], max_new_tokens=2)) == 1
    kept = MultimodalLM(llm, tokenizer, {"ts": build_connector("linear", 8, HIDDEN)}, connector_dtype=torch.float32)
    assert next(kept.connectors.parameters()).dtype == torch.float32
    assert torch.isfinite(kept(kept.collate(mixed_examples()[1:2])).loss)


# ----------------------------------------------------------------------------------- checkpoints
def perturb_(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter.dtype) * 0.05)


def test_checkpoint_round_trip_rebuilds_identical_outputs(llama_dir: Path, tmp_path: Path) -> None:
    kinds = {"image": "qformer", "audio": "perceiver", "ts": "mlp2x_gelu"}
    model = build_model(llama_dir, kinds, encoder_identities={"image": "efficientnet-lite0", "ts": "ts-patch16"})
    model.freeze_llm()
    perturb_(model, seed=3)
    batch = model.collate(mixed_examples())
    with torch.no_grad():
        expected = model.eval()(batch).logits
    folder = save_checkpoint(tmp_path / "ckpt", model, extra={"note": "unit test"}, step=7)
    metadata = read_metadata(folder)
    assert metadata["step"] == 7 and metadata["extra"] == {"note": "unit test"}
    assert {m: spec["kind"] for m, spec in metadata["connectors"].items()} == kinds
    assert metadata["connectors"]["image"]["num_queries"] == 4
    assert metadata["connector_parameters"]["ts"] == model.connectors["ts"].num_parameters()
    assert metadata["llm"]["hidden_size"] == HIDDEN and metadata["llm"]["vocab_size"] == len(model.tokenizer)
    assert Path(metadata["llm"]["name_or_path"]) == llama_dir
    assert metadata["encoders"] == {"image": "efficientnet-lite0", "ts": "ts-patch16"}
    assert metadata["placeholders"] == PLACEHOLDERS and metadata["lora"] is None
    assert sorted(p.name for p in folder.iterdir()) == ["connectors.safetensors", "native.json", "tokenizer"]

    # The whole model back from the folder alone: LLM from the recorded path, tokenizer from the checkpoint.
    rebuilt = load_multimodal_lm(folder)
    assert rebuilt.encoder_identities == {"image": "efficientnet-lite0", "ts": "ts-patch16"}
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(rebuilt.collate(mixed_examples())).logits, expected, rtol=0, atol=0)
    assert rebuilt.generate(mixed_examples()[:2], max_new_tokens=4) == model.generate(mixed_examples()[:2], max_new_tokens=4)

    # Saving again over the same folder replaces it whole.
    save_checkpoint(folder, rebuilt, step=8)
    assert read_metadata(folder)["step"] == 8 and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_checkpoint_round_trip_with_lora(qwen_dir: Path, tmp_path: Path) -> None:
    model = build_model(qwen_dir, {"image": "linear"})
    model.freeze_llm()
    model.enable_lora(r=4, alpha=8, dropout=0.0)
    perturb_(model, seed=4)  # LoRA B starts at zero: make the adapter matter
    example = [Example("<image> what?", [media("image", 3)], "a dog")]
    with torch.no_grad():
        expected = model.eval()(model.collate(example)).logits
        plain = build_model(qwen_dir, {"image": "linear"}).eval()
        plain.connectors.load_state_dict(model.connectors.state_dict())
        assert not torch.allclose(plain(plain.collate(example)).logits, expected)
    folder = save_checkpoint(tmp_path / "stage2", model, step=1)
    assert (folder / "lora" / "adapter_config.json").is_file() and (folder / "lora" / "adapter_model.safetensors").is_file()
    assert read_metadata(folder)["lora"]["r"] == 4

    rebuilt = load_multimodal_lm(folder)
    assert rebuilt.lora_settings == model.lora_settings
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(rebuilt.collate(example)).logits, expected)
    # Into a model that already has an adapter of the same shape (resuming stage 2): weights are replaced.
    resumed = build_model(qwen_dir, {"image": "linear"}, seed=9)
    resumed.enable_lora(r=4, alpha=8, dropout=0.0)
    load_checkpoint(folder, resumed)
    with torch.no_grad():
        torch.testing.assert_close(resumed.eval()(resumed.collate(example)).logits, expected)
    # ... and one of another rank is refused.
    other = build_model(qwen_dir, {"image": "linear"})
    other.enable_lora(r=2, alpha=8, dropout=0.0)
    with pytest.raises(CheckpointMismatchError, match="LoRA adapter: field 'r' is 4 in the checkpoint but 2"):
        load_checkpoint(folder, other)


@pytest.fixture
def saved_checkpoint(llama_dir: Path, tmp_path: Path) -> Path:
    model = build_model(llama_dir, {"image": "qformer", "ts": "mlp2x_gelu"}, encoder_identities={"image": "clip:a"})
    return save_checkpoint(tmp_path / "ckpt", model, step=1)


@pytest.mark.parametrize(("kinds", "options", "message"), [
    ({"image": "perceiver", "ts": "mlp2x_gelu"}, {},
     "image connector: field 'kind' is 'qformer' in the checkpoint but 'perceiver' in the model"),
    ({"image": "qformer", "ts": "mlp3x_gelu"}, {},
     "ts connector: field 'kind' is 'mlp2x_gelu' in the checkpoint but 'mlp3x_gelu' in the model"),
    ({"image": "qformer", "ts": "mlp2x_gelu"}, {"image": {"num_queries": 6, "depth": 1, "heads": 4}},
     "image connector: field 'num_queries' is 4 in the checkpoint but 6 in the model"),
    ({"image": "qformer"}, {}, r"connectors for \['image', 'ts'\] but the model has \['image'\]"),
])
def test_checkpoint_mismatch_names_modality_field_and_values(llama_dir: Path, saved_checkpoint: Path,
                                                            kinds: dict, options: dict, message: str) -> None:
    llm, tokenizer = load_llm(llama_dir)
    connectors = {modality: build_connector(kind, FEATURE_DIMS[modality], HIDDEN,
                                            **options.get(modality, CONNECTOR_OPTIONS.get(kind, {})))
                  for modality, kind in kinds.items()}
    model = MultimodalLM(llm, tokenizer, connectors)
    before = {k: v.clone() for k, v in model.connectors.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=message):
        load_checkpoint(saved_checkpoint, model)
    assert all(torch.equal(v, before[k]) for k, v in model.connectors.state_dict().items())  # nothing half-loaded


def test_checkpoint_mismatch_in_feature_width_encoder_and_llm(llama_dir: Path, qwen_dir: Path,
                                                              saved_checkpoint: Path) -> None:
    llm, tokenizer = load_llm(llama_dir)
    wider = MultimodalLM(llm, tokenizer, {"image": build_connector("qformer", 20, HIDDEN, **CONNECTOR_OPTIONS["qformer"]),
                                          "ts": build_connector("mlp2x_gelu", 8, HIDDEN)})
    with pytest.raises(CheckpointMismatchError, match="image connector: field 'in_dim' is 16 in the checkpoint but 20"):
        load_checkpoint(saved_checkpoint, wider)
    same = build_model(llama_dir, {"image": "qformer", "ts": "mlp2x_gelu"}, encoder_identities={"image": "siglip:b"})
    mismatch = "image encoder: field 'identity' is 'clip:a' in the checkpoint but 'siglip:b'"
    with pytest.raises(CheckpointMismatchError, match=mismatch):
        load_checkpoint(saved_checkpoint, same)
    other_vocab = build_model(qwen_dir, {"image": "qformer", "ts": "mlp2x_gelu"})
    recorded_vocab = read_metadata(saved_checkpoint)["llm"]["vocab_size"]
    other_vocab.llm.resize_token_embeddings(recorded_vocab + 5)
    with pytest.raises(CheckpointMismatchError, match=f"LLM: field 'vocab_size' is {recorded_vocab} in the checkpoint"):
        load_checkpoint(saved_checkpoint, other_vocab)
    # A tampered weight file is caught by shape even when the specs agree.
    from safetensors.torch import load_file, save_file

    weights = load_file(str(saved_checkpoint / "connectors.safetensors"))
    weights["ts.layers.0.weight"] = torch.zeros(HIDDEN, 9)
    save_file(weights, str(saved_checkpoint / "connectors.safetensors"))
    fresh = build_model(llama_dir, {"image": "qformer", "ts": "mlp2x_gelu"})
    with pytest.raises(CheckpointMismatchError, match=r"ts connector: field 'shape of ts.layers.0.weight' is \[32, 9\]"):
        load_checkpoint(saved_checkpoint, fresh)


def test_missing_llm_is_named_when_rebuilding(llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    from orchestrator.errors import ModelNotAvailableError

    moved = tmp_path / "llm-copy"
    shutil.copytree(llama_dir, moved)
    model = build_model(moved, {"ts": "linear"})
    folder = save_checkpoint(tmp_path / "ckpt", model)
    shutil.rmtree(moved)
    with pytest.raises(ModelNotAvailableError, match="cannot find the checkpoint's LLM .*llm-copy"):
        load_multimodal_lm(folder)
    # Given the LLM explicitly, the recorded path does not matter.
    llm, _ = load_llm(llama_dir)
    assert load_multimodal_lm(folder, llm=llm).llm is llm


def test_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="native.json is missing"):
        read_metadata(tmp_path)
    (tmp_path / "native.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InvalidInputError, match="is not an anymoda-native checkpoint"):
        read_metadata(tmp_path)


def test_resume_restores_optimizer_and_scheduler_state(llama_dir: Path, tmp_path: Path) -> None:
    def setup():
        model = build_model(llama_dir, {"ts": "mlp2x_gelu"})
        model.freeze_llm()
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        return model, optimizer, scheduler

    model, optimizer, scheduler = setup()
    batch = model.collate(mixed_examples()[1:2])
    for _ in range(3):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
        scheduler.step()
    folder = save_checkpoint(tmp_path / "resume", model, step=3, optimizer=optimizer, scheduler=scheduler)
    resumed, resumed_optimizer, resumed_scheduler = setup()
    metadata = load_checkpoint(folder, resumed, optimizer=resumed_optimizer, scheduler=resumed_scheduler)
    assert metadata["step"] == 3
    assert resumed_scheduler.last_epoch == 3 and resumed_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    for original, restored in zip(optimizer.state.values(), resumed_optimizer.state.values(), strict=True):
        assert torch.equal(original["exp_avg"], restored["exp_avg"])
        assert torch.equal(original["exp_avg_sq"], restored["exp_avg_sq"])
        assert float(original["step"]) == float(restored["step"]) == 3
    # One more identical step on both gives identical weights: the run continues as if never stopped.
    for run_model, run_optimizer in ((model, optimizer), (resumed, resumed_optimizer)):
        run_optimizer.zero_grad()
        run_model(batch).loss.backward()
        run_optimizer.step()
    for a, b in zip(model.connectors.parameters(), resumed.connectors.parameters(), strict=True):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------ labelled tokens


def test_labelled_tokens_interleave_with_their_text_alone_and_in_a_batch(qwen_dir: Path) -> None:
    """Features with token_texts (ts-patch@steps): each real token follows its label; padded tokens get neither;
    a row scores and generates the same alone or in a batch; score_responses gives forward's loss."""
    model = build_model(qwen_dir, {"ts": "mlp2x_gelu"}).eval()
    labelled = MediaFeatures("ts", torch.randn(4, FEATURE_DIMS["ts"]), torch.tensor([True, True, True, False]), "[s] ",
                             ("7:", "23:", "39:", "55:"))
    plain = media("ts", 5, seed=3)
    examples = [Example("<ts>\nWhere is the spike?", [labelled], "23"), Example("<ts>\ntrend?", [plain], "up")]
    batch = model.collate(examples)
    row = batch["input_ids"][0].tolist()
    positions = (batch["media"]["ts"]["positions"][:3] % batch["input_ids"].shape[1]).tolist()
    for label, position in zip(("7:", "23:", "39:"), positions, strict=True):
        encoded = model.tokenizer(label, add_special_tokens=False)["input_ids"]
        assert row[position - len(encoded):position] == encoded  # the label's tokens, then the patch's position
    assert "55" not in model.tokenizer.decode(row)  # the padded token has no label
    with torch.no_grad():
        scores = model.score_responses(batch)
        assert float(scores.loss) == pytest.approx(float(model(batch).loss), rel=1e-5)
        alone = model.score_responses(model.collate(examples[:1]))
        torch.testing.assert_close(scores.row_loss[0], alone.row_loss[0], rtol=1e-4, atol=1e-5)
        prompts = [Example(e.prompt, e.media) for e in examples]
        assert model.generate(prompts, max_new_tokens=3)[0] == model.generate(prompts[:1], max_new_tokens=3)[0]
    resampler = build_model(qwen_dir, {"ts": "qformer"})
    with pytest.raises(InvalidInputError, match="tokenwise connector"):
        resampler.collate(examples[:1])
    # Labels after their tokens (ts-patch@steps-after): each real token's position, then its label.
    after = MediaFeatures("ts", labelled.features, labelled.mask, "[s] ", ("7,", "23,", "39,", "55,"), True)
    batch = model.collate([Example("<ts>\nWhere is the spike?", [after], "23")])
    row = batch["input_ids"][0].tolist()
    for label, position in zip(("7,", "23,", "39,"), batch["media"]["ts"]["positions"].tolist(), strict=True):
        encoded = model.tokenizer(label, add_special_tokens=False)["input_ids"]
        assert row[position + 1:position + 1 + len(encoded)] == encoded


def test_ts_patch_steps_labels_each_patch_with_its_centre_step(tmp_path: Path) -> None:
    import numpy as np

    from orchestrator.native.encoders import build_encoder

    encoder = build_encoder("ts-patch@steps")
    assert encoder.identity == "ts-patch16@steps" and build_encoder(encoder.identity).step_labels
    features = encoder.encode(np.arange(40.0))
    assert features.token_texts == ("7:", "23:", "35:")  # steps 0-15, 16-31 and the short last patch 32-39
    assert build_encoder("ts-patch").encode(np.arange(40.0)).token_texts is None
    after = build_encoder("ts-patch@steps-after")
    assert after.identity == "ts-patch16@steps-after" and build_encoder(after.identity).step_labels == "after"
    features = after.encode(np.arange(40.0))
    assert features.token_texts == ("7,", "23,", "35,") and features.token_texts_after
    from orchestrator.native.feature_cache import FeatureCache, encode_cached

    cache = FeatureCache(tmp_path)
    for encoder in (after, build_encoder("ts-patch@steps")):
        first, again = (encode_cached(encoder, np.arange(40.0), cache) for _ in range(2))
        assert (again.token_texts, again.token_texts_after) == (first.token_texts, first.token_texts_after)
    assert cache.hits == 2
    with pytest.raises(InvalidInputError, match="one per token"):
        MediaFeatures("ts", torch.zeros(2, 4), None, "", ("a",))
