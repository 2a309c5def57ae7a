"""Tokenizers built offline for tiny random test models (the hub is out of reach in tests).

Each builder trains a small vocabulary on a fixed English corpus with the ``tokenizers`` library and
wraps it in the transformers class the model family expects, so ``save_pretrained`` /
``from_pretrained`` round-trip exactly as with real checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "a photo of a cat sitting on a red sofa",
    "a dog runs across the green field with a ball",
    "what is the total on this receipt",
    "the quick brown fox jumps over the lazy dog",
    "translate english to german: the house is wonderful",
    "summarize: the meeting moved to friday because the report was late",
    "how many people are in the picture? two people",
    "an astronaut riding a horse on the moon, digital art",
    "the sound of rain on a tin roof and distant thunder",
    "question: where is the eagle? context: the eagle sits on a branch",
    "<|im_start|>user hello<|im_end|> <|im_start|>assistant hi there<|im_end|>",
    "0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' \" ( ) - +",
]


def byte_level_bpe(vocab_size: int = 300, *, special_tokens: tuple[str, ...] = ("<|endoftext|>",)):
    """A GPT-2 style byte-level BPE wrapped as PreTrainedTokenizerFast (GPT-2, Llama, Qwen2, OPT, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    eos = special_tokens[0]
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, bos_token=eos, unk_token=eos, pad_token=eos)


def wordpiece_vocab(vocab_size: int = 200) -> list[str]:
    """A BERT-style WordPiece vocabulary with the usual special tokens first."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    vocab = tokenizer.get_vocab()
    return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]


def bert_tokenizer(folder: Path, vocab_size: int = 200):
    """BertTokenizer (BERT, BLIP, ViLT, DistilBERT, ...) written to ``folder`` and loaded back from it."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # transformers 5 silently ignores vocab_file=...: the vocabulary must be passed as a dict.
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(wordpiece_vocab(vocab_size))})
    tokenizer.save_pretrained(folder)
    return tokenizer


def clip_tokenizer(folder: Path, vocab_size: int = 300, model_max_length: int = 77):
    """CLIPTokenizer (Stable Diffusion, CLIP, OWL-ViT, CLAP-like) with vocab.json / merges.txt in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    # As in real CLIP, the special tokens take the last ids: OWL-ViT treats a query whose first id is 0
    # as padding, so <|startoftext|> at 0 would silently blank every query.
    ordinary = [t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1]) if t not in specials]
    vocab = {token: i for i, token in enumerate(ordinary + specials)}
    # vocab and merges as dict/list: file arguments are ignored.
    wrapped = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    wrapped.save_pretrained(folder)
    return wrapped
