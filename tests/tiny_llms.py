"""Tiny random chat LLMs for tests, saved so they load through ``from_pretrained`` as real weights do."""

from __future__ import annotations

from pathlib import Path

from tiny_tokenizers import byte_level_bpe

# The ChatML template the packaged Qwen2.5 ships (system prompt left out).
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def save_tiny_chat_qwen2(folder: Path, *, hidden_size: int = 32, intermediate_size: int = 64, seed: int = 0,
                         initializer_range: float = 0.02, max_position_embeddings: int = 512) -> Path:
    """A 2-layer Qwen2 whose byte-level tokenizer has the ChatML template; ``<|im_end|>`` ends an answer.

    A wider ``initializer_range`` than the default 0.02 (0.1-0.2) is what connector tests want: at the
    default scale a random 2-layer LLM's predictions barely depend on its input, so no connector could
    lower its loss.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = byte_level_bpe(special_tokens=("<|im_end|>", "<|im_start|>", "<|endoftext|>"))
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder
