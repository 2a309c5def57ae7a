"""An LLM that perceives media directly: connector outputs spliced into its input embeddings.

A prompt names where each media item goes with a placeholder string (``<image>``, ``<audio>``, ``<ts>``).
The placeholders are never turned into vocabulary tokens: the rendered prompt is split at them, the text
pieces are tokenised on their own, and the positions in between are reserved for the connector's output.
So any tokenizer works unchanged and the LLM's embedding table is never resized. The number and order of
placeholders must match the media list exactly, so a literal ``<image>`` typed by a user cannot smuggle in
(or shift) a media slot: it is an error (use :func:`escape_placeholders` on untrusted text).

Training batches are padded on the right, generation batches on the left (so every row's next token is
at the same column); position ids always count real tokens only, so a padded row sees exactly what it
would see alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..extras import import_extra
from .connectors import Connector

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>", "ts": "<ts>"}
MODALITY_OF_PLACEHOLDER = {text: modality for modality, text in PLACEHOLDERS.items()}
_PLACEHOLDER_PATTERN = re.compile("|".join(re.escape(text) for text in PLACEHOLDERS.values()))
IGNORE_INDEX = -100  # the label value transformers' cross-entropy skips


def escape_placeholders(text: str) -> str:
    """Make untrusted text safe to put in a prompt: ``<image>`` becomes ``< image>`` (and so on)."""
    return _PLACEHOLDER_PATTERN.sub(lambda match: "< " + match.group(0)[1:], text)


@dataclass
class Example:
    """One prompt with its media (in placeholder order) and, for training, the target response."""

    prompt: str
    media: list = field(default_factory=list)  # list[MediaFeatures]
    response: str | None = None


@dataclass
class _Tokenised:
    input_ids: list[int]
    labels: list[int]
    media_spans: list[list[int]]  # each media item's reserved positions (in order), in media order


@dataclass
class ResponseScores:
    """Teacher-forced scores of a batch's responses (see :meth:`MultimodalLM.score_responses`)."""

    loss: torch.Tensor            # mean cross-entropy over every target token of the batch (what ``forward().loss`` is)
    row_loss: torch.Tensor        # [B] summed cross-entropy of each row's target tokens
    row_tokens: torch.Tensor      # [B] target tokens per row (the response and its end-of-text token)
    exact: torch.Tensor           # [B] bool: every target token is the model's top choice given the ones before it,
                                  # i.e. greedy decoding would write this response word for word and stop


class MultimodalLM(nn.Module):
    """Any Hugging Face causal LM plus one trainable connector per modality."""

    def __init__(self, llm: nn.Module, tokenizer: Any, connectors: dict[str, Connector], *,
                 encoder_identities: dict[str, str] | None = None, connector_dtype: torch.dtype | None = None) -> None:
        """``connector_dtype`` defaults to the LLM's dtype; pass torch.float32 to keep fp32 master weights."""
        super().__init__()
        if not connectors:
            raise InvalidInputError("MultimodalLM needs at least one connector")
        embeddings = llm.get_input_embeddings()
        if embeddings is None:
            raise InvalidInputError(f"{type(llm).__name__} has no input embeddings to splice media into")
        hidden = embeddings.embedding_dim
        for modality, connector in connectors.items():
            if modality not in PLACEHOLDERS:
                raise InvalidInputError(f"unknown modality {modality!r} for a connector; known: {sorted(PLACEHOLDERS)}")
            if not isinstance(connector, Connector):
                raise InvalidInputError(f"the {modality} connector must be a Connector, got {type(connector).__name__}")
            if connector.out_dim != hidden:
                raise InvalidInputError(
                    f"the {modality} connector outputs {connector.out_dim}-wide tokens but the LLM's embeddings are "
                    f"{hidden}-wide")
        for modality in encoder_identities or {}:
            if modality not in connectors:
                raise InvalidInputError(f"an encoder identity is given for {modality!r}, which has no connector")
        if tokenizer.eos_token_id is None:
            raise InvalidInputError("the tokenizer has no EOS token: the model could never learn to stop")
        self.llm = llm
        self.tokenizer = tokenizer
        self.connectors = nn.ModuleDict(connectors)
        self.encoder_identities: dict[str, str] = dict(encoder_identities or {})
        self.lora_settings: dict[str, Any] | None = None
        weight = embeddings.weight
        self.connectors.to(device=weight.device, dtype=connector_dtype or weight.dtype)

    # ----------------------------------------------------------------- description
    @property
    def hidden_size(self) -> int:
        return self.llm.get_input_embeddings().embedding_dim

    def llm_identity(self) -> dict[str, Any]:
        """What a checkpoint records about the LLM: where it came from and the shapes connectors depend on."""
        config = self.llm.config
        name_or_path = str(getattr(config, "_name_or_path", "") or getattr(self.llm, "name_or_path", ""))
        return {
            "name_or_path": name_or_path,
            "model_id": _converted_from(name_or_path),
            "model_type": getattr(config, "model_type", None),
            "hidden_size": self.hidden_size,
            "vocab_size": self.llm.get_input_embeddings().num_embeddings,
        }

    # ----------------------------------------------------------------- training stages
    def freeze_llm(self) -> None:
        """Stage 1 (alignment): only the connectors learn."""
        self.llm.requires_grad_(False)
        self.connectors.requires_grad_(True)

    def enable_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                    target_modules: list[str] | str | None = None) -> None:
        """Stage 2 (instruction tuning): connectors plus LoRA adapters on the frozen LLM (peft)."""
        if self.lora_settings is not None:
            raise InvalidInputError("LoRA is already enabled on this model")
        for name, value in (("r", r), ("alpha", alpha)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"LoRA {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise InvalidInputError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
        peft = import_extra("peft", "LoRA (stage-2 training with lora_r > 0)")

        # "all-linear" = every linear layer of the blocks but not the output head, as in LLaVA's LoRA runs.
        targets = "all-linear" if target_modules is None else target_modules
        config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets,
                                 task_type="CAUSAL_LM")
        self.llm = peft.get_peft_model(self.llm, config)  # freezes the base weights, adapters trainable
        self.connectors.requires_grad_(True)
        self.lora_settings = {"r": r, "alpha": alpha, "dropout": float(dropout),
                              "target_modules": targets if isinstance(targets, str) else sorted(targets)}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ----------------------------------------------------------------- batching
    def collate(self, examples: list[Example], *, for_generation: bool = False) -> dict[str, Any]:
        """Tokenise and pad a batch; media features are padded per modality and mapped to their positions.

        Training (``for_generation=False``): right padding, every example needs a response, ``labels`` are
        -100 on the prompt, on media positions and on padding. Generation: left padding, responses ignored.
        ``batch["media"][modality]`` holds ``features`` [N, T, D] (float32, zero-padded), ``mask`` [N, T] and
        ``positions``: the flat indices (row * length + column) its connector's real output tokens go to.
        """
        if not isinstance(examples, (list, tuple)) or not examples:
            raise InvalidInputError("collate needs a non-empty list of Example")
        rows = [self._tokenise(example, index, for_generation) for index, example in enumerate(examples)]
        length = max(len(row.input_ids) for row in rows)
        limit = getattr(self.llm.config, "max_position_embeddings", None)
        if isinstance(limit, int) and length > limit:
            raise InvalidInputError(f"a batch row is {length} tokens long, more than the LLM's {limit} positions")
        pad_id = self._pad_token_id()
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        media_by_modality: dict[str, list[tuple[Any, list[int]]]] = {}
        for row_index, (row, example) in enumerate(zip(rows, examples, strict=True)):
            offset = length - len(row.input_ids) if for_generation else 0
            span = slice(offset, offset + len(row.input_ids))
            input_ids[row_index, span] = torch.tensor(row.input_ids, dtype=torch.long)
            labels[row_index, span] = torch.tensor(row.labels, dtype=torch.long)
            attention_mask[row_index, span] = 1
            for item, span in zip(example.media, row.media_spans, strict=True):
                first = row_index * length + offset
                media_by_modality.setdefault(item.modality, []).append((item, [first + column for column in span]))
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                 "position_ids": position_ids, "media": {}}
        if not for_generation:
            batch["labels"] = labels
        for modality, items in media_by_modality.items():
            batch["media"][modality] = self._pad_media(items)
        return batch

    def _pad_media(self, items: list[tuple[Any, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(item.features.shape[0] for item, _ in items)
        dim = items[0][0].features.shape[1]
        features = torch.zeros(len(items), longest, dim, dtype=torch.float32)
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        positions: list[int] = []
        for index, (item, item_positions) in enumerate(items):
            count = item.features.shape[0]
            features[index, :count] = item.features.detach().to(device="cpu", dtype=torch.float32)
            mask[index, :count] = _real_tokens(item)
            positions.extend(item_positions)
        return {"features": features, "mask": mask, "positions": torch.tensor(positions, dtype=torch.long)}

    def _tokenise(self, example: Example, index: int, for_generation: bool) -> _Tokenised:
        where = f"example {index}"
        if not isinstance(example, Example):
            raise InvalidInputError(f"{where}: expected an Example, got {type(example).__name__}")
        if not isinstance(example.prompt, str):
            raise InvalidInputError(f"{where}: the prompt must be a string, got {type(example.prompt).__name__}")
        media = list(example.media)
        for position, item in enumerate(media):
            self._check_media(item, f"{where}, media item {position}")
        self._check_placeholders(example.prompt, media, where)
        if not for_generation and not isinstance(example.response, str):
            raise InvalidInputError(f"{where}: training needs a response string, got {example.response!r}")

        # Each media item's prefix text (e.g. a series' offset and scale) goes just before its placeholder.
        pieces = _PLACEHOLDER_PATTERN.split(example.prompt)
        prompt = pieces[0] + "".join((item.prefix_text or "") + PLACEHOLDERS[item.modality] + text
                                     for item, text in zip(media, pieces[1:], strict=True))
        rendered = self._render_prompt(prompt)
        text_pieces = _PLACEHOLDER_PATTERN.split(rendered)
        if len(text_pieces) != len(media) + 1:
            raise InvalidInputError(
                f"{where}: the chat template added placeholder text of its own ({len(text_pieces) - 1} placeholders "
                f"after rendering, {len(media)} media items)")

        input_ids: list[int] = []
        spans: list[list[int]] = []
        pad_id = self._pad_token_id()
        for piece_index, text in enumerate(text_pieces):
            input_ids += self._encode(text)
            if piece_index < len(media):
                item = media[piece_index]
                real = _real_tokens(item)
                labels_text = getattr(item, "token_texts", None)
                if labels_text:
                    # Text before each real feature token (e.g. the step a time-series patch is centred on):
                    # the positions interleave with it, one per token, which only a tokenwise connector keeps.
                    connector = self.connectors[item.modality]
                    if connector.output_length(int(real.sum())) != int(real.sum()) or connector.kind in ("qformer", "perceiver"):
                        raise InvalidInputError(
                            f"{where}: the {item.modality} features label each token (encoder option @steps), which needs a "
                            f"tokenwise connector (linear, mlpNx_gelu); this model's is {connector.kind}")
                    span = []
                    after = bool(getattr(item, "token_texts_after", False))
                    for label, keep in zip(labels_text, real.tolist(), strict=True):
                        if keep:
                            if not after:
                                input_ids += self._encode(label)
                            span.append(len(input_ids))
                            input_ids.append(pad_id)
                            if after:
                                input_ids += self._encode(label)
                    spans.append(span)
                    continue
                count = self.connectors[item.modality].output_length(int(real.sum()))
                spans.append(list(range(len(input_ids), len(input_ids) + count)))
                input_ids += [pad_id] * count  # placeholders only: these embeddings are replaced
        labels = [IGNORE_INDEX] * len(input_ids)
        if not for_generation:
            target = self._encode(example.response) + [self.tokenizer.eos_token_id]
            input_ids += target
            labels += target
        return _Tokenised(input_ids, labels, spans)

    def _check_media(self, item: Any, where: str) -> None:
        modality = getattr(item, "modality", None)
        features = getattr(item, "features", None)
        if modality is None or not isinstance(features, torch.Tensor):
            raise InvalidInputError(f"{where}: expected MediaFeatures, got {type(item).__name__}")
        if modality not in self.connectors:
            raise InvalidInputError(
                f"{where}: no connector for modality {modality!r}; this model has {sorted(self.connectors)}")
        expected = self.connectors[modality].in_dim
        if features.dim() != 2 or features.shape[1] != expected or features.shape[0] == 0:
            raise InvalidInputError(
                f"{where}: {modality} features must be [tokens>0, {expected}], got {list(features.shape)}")
        mask = getattr(item, "mask", None)
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != features.shape[:1]:
                raise InvalidInputError(f"{where}: the mask must be a bool tensor of shape [{features.shape[0]}]")
            if not bool(mask.any()):
                raise InvalidInputError(f"{where}: the mask marks no feature token as real")
        if _PLACEHOLDER_PATTERN.search(getattr(item, "prefix_text", "") or ""):
            raise InvalidInputError(f"{where}: the prefix text contains a media placeholder")

    @staticmethod
    def _check_placeholders(prompt: str, media: list, where: str) -> None:
        found = [MODALITY_OF_PLACEHOLDER[match] for match in _PLACEHOLDER_PATTERN.findall(prompt)]
        given = [item.modality for item in media]
        if len(found) != len(given):
            raise InvalidInputError(
                f"{where}: the prompt has {len(found)} media placeholders {found} but {len(given)} media items "
                f"{given} were given (escape literal placeholders in user text with escape_placeholders)")
        if found != given:
            raise InvalidInputError(
                f"{where}: the prompt's placeholders are in the order {found} but the media items are {given}")

    def _render_prompt(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        prefix = ""
        bos = self.tokenizer.bos_token
        # Without a template, keep the BOS token the tokenizer would add to a whole string (Llama-style).
        if bos is not None and self.tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [self.tokenizer.bos_token_id]:
            prefix = bos
        return prefix + prompt + "\n"

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    # ----------------------------------------------------------------- running
    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Token embeddings of ``batch['input_ids']`` with every media position replaced by connector output."""
        table = self.llm.get_input_embeddings()
        device = table.weight.device
        embeds = table(batch["input_ids"].to(device))
        batch_size, length, hidden = embeds.shape
        flat = embeds.reshape(batch_size * length, hidden)
        for modality, media in batch["media"].items():
            connector = self.connectors[modality]
            reference = next(connector.parameters())
            features = media["features"].to(device=reference.device, dtype=reference.dtype)
            mask = media["mask"].to(reference.device)
            output = connector(features, mask)
            real = connector.output_mask(mask, features.shape[1]).expand(output.shape[0], -1)
            tokens = output[real]
            positions = media["positions"].to(device)
            if tokens.shape[0] != positions.shape[0]:
                raise RuntimeError(
                    f"{modality} connector produced {tokens.shape[0]} tokens for {positions.shape[0]} reserved positions")
            # index_copy (not in-place assignment) keeps the autograd graph back to the connector.
            flat = flat.index_copy(0, positions, tokens.to(device=device, dtype=flat.dtype))
        return flat.view(batch_size, length, hidden)

    def forward(self, batch: dict[str, Any]) -> Any:
        """The LLM's output (``.loss`` when the batch has labels, ``.logits``) on the spliced embeddings."""
        device = self.llm.get_input_embeddings().weight.device
        labels = batch.get("labels")
        return self.llm(
            inputs_embeds=self.embed(batch),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=batch["position_ids"].to(device),
            labels=None if labels is None else labels.to(device),
        )

    def score_responses(self, batch: dict[str, Any]) -> ResponseScores:
        """Teacher-forced scores of a training batch's responses, computing logits only where a target is predicted.

        The loss equals ``forward(batch).loss``; the output projection (about a quarter of a 0.5B Qwen's compute per
        token, and as much again in the backward pass) runs on the response columns only.
        """
        labels = batch.get("labels")
        if labels is None:
            raise InvalidInputError("score_responses needs a batch with responses (collate without for_generation)")
        device = self.llm.get_input_embeddings().weight.device
        targets = labels[:, 1:]                      # position t predicts the token at t + 1
        wanted = targets != IGNORE_INDEX
        if not bool(wanted.any()):
            raise InvalidInputError("score_responses: the batch has no target tokens")
        columns = wanted.any(0).nonzero().flatten()
        first, last = int(columns.min()), int(columns.max())
        options: dict[str, Any] = {}
        if _takes_logits_to_keep(self.llm):
            options["logits_to_keep"] = torch.arange(first, last + 1, device=device)
        output = self.llm(inputs_embeds=self.embed(batch), attention_mask=batch["attention_mask"].to(device),
                          position_ids=batch["position_ids"].to(device), **options)
        logits = output.logits
        if "logits_to_keep" not in options:
            logits = logits[:, first:last + 1]
        logits = logits.float()
        kept = targets[:, first:last + 1].to(device)
        mask = kept != IGNORE_INDEX
        token_losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), kept, ignore_index=IGNORE_INDEX,
                                                         reduction="none")
        row_loss = (token_losses * mask).sum(1)
        row_tokens = mask.sum(1)
        exact = ((logits.argmax(-1) == kept) | ~mask).all(1)
        return ResponseScores(row_loss.sum() / row_tokens.sum(), row_loss.detach(), row_tokens, exact)

    @torch.no_grad()
    def generate(self, examples: list[Example], max_new_tokens: int = 32, **generate_options: Any) -> list[str]:
        """Greedy by default; extra options go to the LLM's ``generate`` (e.g. ``do_sample=True``)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        batch = self.collate(examples, for_generation=True)
        device = self.llm.get_input_embeddings().weight.device
        options: dict[str, Any] = {"do_sample": False, "max_new_tokens": max_new_tokens,
                                   "pad_token_id": self._pad_token_id(), "eos_token_id": self._stop_token_ids()}
        options.update(generate_options)
        if not options["do_sample"]:
            # A model's generation_config may carry sampling settings; they would only warn under greedy.
            options.update(temperature=None, top_p=None, top_k=None)
        generated = self.llm.generate(inputs_embeds=self.embed(batch),
                                      attention_mask=batch["attention_mask"].to(device), **options)
        # Decoder-only models given only inputs_embeds return just the new tokens.
        return [text.strip() for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]

    def _stop_token_ids(self) -> list[int]:
        configured = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        stops = configured if isinstance(configured, list) else [configured]
        return sorted({token for token in [*stops, self.tokenizer.eos_token_id] if token is not None})


def _takes_logits_to_keep(llm: Any) -> bool:
    """Whether the causal LM (under any peft wrapper) can compute logits for chosen positions only."""
    import inspect

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _real_tokens(item: Any) -> torch.Tensor:
    mask = getattr(item, "mask", None)
    return torch.ones(item.features.shape[0], dtype=torch.bool) if mask is None else mask.cpu()


def _converted_from(name_or_path: str) -> str | None:
    """The hub id behind a locally converted copy (the packaged LLM), so another machine can find its own."""
    from ..models.packaged_llm import SOURCE_MARKER

    if not name_or_path:
        return None
    marker = Path(name_or_path) / SOURCE_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("model_id")
    except (OSError, ValueError, AttributeError):
        return None
