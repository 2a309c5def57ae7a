"""Training the native path on a tiny random Qwen2 (saved and reloaded like real weights) and real ts-patch features.

Covers: the loss falls within 20 steps (MLP and Q-Former connectors), the warmup + cosine schedule, the
seeded batch order, a resumed run reproducing the uninterrupted one, stage 2 with LoRA from a stage-1
checkpoint, the checkpoint round trip and its mismatch error, the loss-curve PNG, and the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_llms import save_tiny_chat_qwen2

from orchestrator.errors import InvalidInputError
from orchestrator.native.cli_train import add_train_parser, cmd_train, resolve_arguments
from orchestrator.native.feature_cache import FeatureCache
from orchestrator.native.llm import build_model, load_llm
from orchestrator.native.tasks import (
    corpus_word_error_rate,
    prepare_task,
    word_error_rate,
)
from orchestrator.native.train import (
    TrainConfig,
    evaluate,
    example_order,
    read_trainer_state,
    train_connector,
    warmup_cosine,
)

QFORMER_OPTIONS = {"num_queries": 4, "depth": 1, "heads": 4}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_chat_qwen2(tmp_path_factory.mktemp("tiny-qwen2-train"), hidden_size=48, intermediate_size=96,
                                initializer_range=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    cache = FeatureCache(tmp_path_factory.mktemp("features"))
    return prepare_task("timeseries-qa", train_size=48, eval_size=6, seed=3, cache=cache, progress=False)


def fresh_model(llm_dir: Path, data, connector: str = "mlp2x_gelu", seed: int = 0, **options):
    llm = load_llm(str(llm_dir))
    torch.manual_seed(seed)
    return build_model(llm, data.modality, data.encoder, data.feature_dim, connector, options)


def config(**overrides) -> TrainConfig:
    values = dict(max_steps=20, batch_size=4, lr=1e-2, warmup_steps=2, eval_every=0, eval_generate_limit=0)
    values.update(overrides)
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------------------ pieces


def test_warmup_then_cosine_schedule() -> None:
    multipliers = [warmup_cosine(step, 4, 20) for step in range(20)]
    assert multipliers[:4] == [0.25, 0.5, 0.75, 1.0]
    assert multipliers[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(multipliers[4:], multipliers[5:]))  # decays monotonically
    assert multipliers[-1] < 0.02
    assert warmup_cosine(20, 4, 20, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_example_order_is_seeded_and_covers_each_epoch() -> None:
    first_epoch = example_order(10, seed=5, start=0, length=10)
    assert sorted(first_epoch) == list(range(10))
    assert example_order(10, 5, 0, 25) == example_order(10, 5, 0, 13) + example_order(10, 5, 13, 12)
    assert example_order(10, 6, 0, 10) != first_epoch


def test_config_refuses_bad_values() -> None:
    for bad, words in [({"stage": 3}, "stage"), ({"lr": 0.0}, "lr"), ({"warmup_steps": 20}, "warmup_steps"),
                       ({"lora_r": 4}, "stage 2"), ({"autocast": "bf16x"}, "autocast"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(InvalidInputError, match=words):
            config(**bad).validate()


def test_autocast_is_refused_on_cpu(llm_dir, data) -> None:
    with pytest.raises(InvalidInputError, match="CUDA"):
        train_connector(fresh_model(llm_dir, data), data.train, data.eval, config(autocast="bf16"), progress=False)


def test_word_error_rate() -> None:
    assert word_error_rate("the cat sat", "the cat sat") == 0.0
    assert word_error_rate("the cat sat", "The cat, sat.") == 0.0
    assert word_error_rate("the cat sat", "the dog sat down") == pytest.approx(2 / 3)
    assert corpus_word_error_rate(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("connector,options", [("mlp2x_gelu", {}), ("qformer", QFORMER_OPTIONS)])
def test_twenty_steps_lower_the_loss(llm_dir, data, connector, options) -> None:
    model = fresh_model(llm_dir, data, connector, **options)
    before = evaluate(model, data.eval, batch_size=6).loss
    result = train_connector(model, data.train, data.eval, config(), progress=False)
    assert result.steps == 20 and len(result.history) == 20
    first = sum(entry["loss"] for entry in result.history[:3]) / 3
    last = sum(entry["loss"] for entry in result.history[-3:]) / 3
    assert last < first - 0.05, (first, last)
    assert result.final_eval.loss < before - 0.1, (before, result.final_eval.loss)
    assert result.trainable_parameters == model.connectors["ts"].num_parameters()
    assert all(not p.requires_grad for p in model.llm.parameters())  # stage 1: the LLM stays frozen


def test_resume_continues_the_same_trajectory(llm_dir, data, tmp_path) -> None:
    whole = train_connector(fresh_model(llm_dir, data), data.train, data.eval,
                            config(max_steps=12, grad_accum=2, save_every=6, output_dir=str(tmp_path / "whole")),
                            progress=False)
    halfway = tmp_path / "whole" / "checkpoints" / "step-0000006"
    assert read_trainer_state(halfway)["step"] == 6
    # A different initial connector: everything that matters must come from the checkpoint.
    resumed = train_connector(fresh_model(llm_dir, data, seed=99), data.train, data.eval,
                              config(max_steps=12, grad_accum=2, output_dir=str(tmp_path / "resumed"),
                                     resume_from=str(halfway)),
                              progress=False)
    assert resumed.steps == 12
    assert [e["step"] for e in resumed.history] == list(range(1, 13))
    for a, b in zip(whole.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])
    assert resumed.final_eval.loss == pytest.approx(whole.final_eval.loss, rel=1e-4)
    with pytest.raises(InvalidInputError, match="grad_accum"):
        train_connector(fresh_model(llm_dir, data), data.train, data.eval,
                        config(max_steps=14, output_dir=str(tmp_path / "other"), resume_from=str(halfway)), progress=False)
    # The run folder itself resumes from its newest checkpoint: the final one, which has nothing left to do.
    with pytest.raises(InvalidInputError, match="already reaches"):
        train_connector(fresh_model(llm_dir, data), data.train, data.eval,
                        config(max_steps=12, grad_accum=2, output_dir=str(tmp_path / "again"),
                               resume_from=str(tmp_path / "whole")), progress=False)


def test_outputs_curve_summary_and_checkpoint_round_trip(llm_dir, data, tmp_path) -> None:
    from orchestrator.native.checkpoint import (
        CheckpointMismatchError,
        load_checkpoint,
        load_multimodal_lm,
    )

    model = fresh_model(llm_dir, data)
    result = train_connector(model, data.train, data.eval,
                             config(max_steps=8, eval_every=4, eval_subset=4, eval_generate_limit=2, final_generate_limit=3,
                                    max_new_tokens=4, output_dir=str(tmp_path)),
                             grader=data.grader, extra={"task": data.task}, progress=False, eval_kinds=data.eval_kinds)
    assert result.loss_curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(result.loss_curve) as curve:
        assert curve.size[0] > 300 and curve.size[1] > 200
    summary = json.loads(result.summary_path.read_text())
    assert summary["steps"] == 8 and summary["task"] == "timeseries-qa"
    assert [e["step"] for e in summary["evals"]] == [4, 8]
    periodic, final = summary["evals"]
    assert (periodic["examples"], periodic["generated"]) == (4, 2)   # cheap: a subset, few answers generated
    assert (final["examples"], final["generated"], final["final"]) == (6, 3, True)
    assert 0.0 <= summary["final_eval"]["accuracy"] <= 1.0 and 0.0 <= summary["final_eval"]["forced_exact"] <= 1.0
    assert any(key.startswith("accuracy/") for key in summary["final_eval"])
    assert any(key.startswith("forced_exact/") for key in summary["final_eval"])
    assert len(result.final_eval.predictions) == 3

    reloaded = load_multimodal_lm(result.checkpoint)
    assert evaluate(reloaded, data.eval, batch_size=6).loss == pytest.approx(result.final_eval.loss, rel=1e-5)
    wrong = fresh_model(llm_dir, data, "qformer", **QFORMER_OPTIONS)
    with pytest.raises(CheckpointMismatchError, match="kind"):
        load_checkpoint(result.checkpoint, wrong)


def test_forced_scoring_matches_the_loss_and_stands_for_greedy_answers(llm_dir, data) -> None:
    """score_responses gives forward()'s loss from logits of the answer columns only; an example it calls exact is
    one greedy decoding answers word for word (so evaluation grades it without generating it again)."""
    from dataclasses import replace

    model = fresh_model(llm_dir, data)
    # The same answer to every question: a tiny model learns to write it word for word for some of them.
    train = [replace(example, response="up") for example in data.train[:16]]
    examples = [replace(example, response="up") for example in data.eval]
    train_connector(model, train, examples, config(max_steps=30, lr=3e-2), progress=False)
    model.eval()
    batch = model.collate(examples)
    with torch.no_grad():
        scores = model.score_responses(batch)
        assert float(scores.loss) == pytest.approx(float(model(batch).loss), rel=1e-5)
        generated = model.generate([replace(e, response=None) for e in examples], max_new_tokens=4)
    assert any(scores.exact.tolist())  # the test means something only when some answers are exact
    for hit, answer in zip(scores.exact.tolist(), generated):
        assert not hit or answer == "up", (hit, answer)


def test_training_shows_evaluation_progress_and_the_time_left(llm_dir, data, capsys) -> None:
    result = train_connector(fresh_model(llm_dir, data), data.train, data.eval,
                             config(max_steps=4, eval_every=2, eval_subset=3, eval_generate_limit=1, max_new_tokens=3),
                             grader=data.grader, progress=True, eval_kinds=data.eval_kinds)
    printed = capsys.readouterr().err
    assert "evaluation @ step 2" in printed and "final evaluation @ step 4" in printed       # their own progress lines
    assert "step 2 evaluation: held-out loss" in printed and "on 3 held-out examples" in printed
    assert "step 4 final evaluation: held-out loss" in printed and "on 6 held-out examples" in printed
    assert re.search(r"left=~?(\d+m)?\d+s incl\. \d eval", printed), printed                # the rest of the run, evaluations included
    assert result.final_eval.generated == 6


def test_stage_two_adds_lora_on_top_of_a_stage_one_connector(llm_dir, data, tmp_path) -> None:
    from orchestrator.native.checkpoint import load_multimodal_lm, read_metadata

    stage1 = train_connector(fresh_model(llm_dir, data), data.train, data.eval,
                             config(max_steps=4, output_dir=str(tmp_path / "s1")), progress=False)
    model = fresh_model(llm_dir, data, seed=7)
    stage2 = train_connector(model, data.train, data.eval,
                             config(stage=2, lora_r=4, max_steps=4, lr=2e-3, output_dir=str(tmp_path / "s2"),
                                    init_from=str(stage1.checkpoint)), progress=False)
    assert stage2.trainable_parameters > stage1.trainable_parameters  # connector + adapters
    assert read_metadata(stage2.checkpoint)["lora"]["r"] == 4
    reloaded = load_multimodal_lm(stage2.checkpoint)
    assert evaluate(reloaded, data.eval, batch_size=6).loss == pytest.approx(stage2.final_eval.loss, rel=1e-4)


# ------------------------------------------------------------------------------------------------ CLI


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="anymoda")
    add_train_parser(top.add_subparsers(dest="command", required=True))
    return top


def test_cli_parses_and_validates(tmp_path) -> None:
    args = parser().parse_args(["train", "connector", "--task", "timeseries-qa", "--connector", "qformer",
                                "--connector-option", "num_queries=8", "--steps", "40", "--out", str(tmp_path)])
    resolved = resolve_arguments(args)
    assert resolved.connector == "qformer" and resolved.connector_option == {"num_queries": 8}
    assert resolved.warmup == 2 and resolved.eval_every == 10 and resolved.lr == 1e-3 and resolved.stage == 1
    assert resolved.encoder == "ts-patch"  # a resampler cannot take step labels
    plain = resolve_arguments(parser().parse_args(["train", "connector", "--out", str(tmp_path)]))
    assert plain.encoder == "ts-patch@steps-after" and plain.connector == "mlp2x_gelu" and plain.eval_every == 50
    for bad in (["--connector", "mlp0x_gelu"], ["--steps", "0"], ["--lr", "2"], ["--stage", "3"],
                ["--task", "video"], ["--connector-option", "num_queries"], ["--batch-size", "x"]):
        with pytest.raises(SystemExit):
            parser().parse_args(["train", "connector", "--out", str(tmp_path), *bad])
    for bad, words in [(["--lora-r", "8"], "stage 2"), (["--steps", "10", "--warmup", "10"], "warmup"),
                       ([], "--out"), (["--qa-kinds", "trend,colour"], "colour"),
                       (["--task", "scenes", "--qa-kinds", "trend"], "timeseries-qa"),
                       (["--resume", str(tmp_path / "nowhere")], "not a folder")]:
        argv = ["train", "connector", *bad] + ([] if bad == [] or "--resume" in bad else ["--out", str(tmp_path)])
        with pytest.raises(InvalidInputError, match=words):
            resolve_arguments(parser().parse_args(argv))


def test_cli_trains_writes_and_resumes(llm_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", "connector", "--task", "timeseries-qa", "--llm", str(llm_dir), "--train-size", "16",
            "--eval-size", "3", "--batch-size", "2", "--eval-every", "0", "--eval-generate", "2",
            "--max-new-tokens", "3", "--no-progress"]
    args = parser().parse_args([*base, "--steps", "4", "--save-every", "2", "--out", str(out)])
    assert cmd_train(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["cli"]["connector"] == "mlp2x_gelu"
    assert (out / "checkpoint" / "native.json").is_file() and (out / "loss_curve.png").is_file()
    with pytest.raises(InvalidInputError, match="already there"):
        resolve_arguments(parser().parse_args([*base, "--steps", "4", "--out", str(out)]))
    # Continue the finished run to 6 steps: settings come from the run, the history continues.
    assert cmd_train(parser().parse_args(["train", "connector", "--resume", str(out), "--steps", "6", "--no-progress"])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["config"]["batch_size"] == 2
    assert [entry["step"] for entry in read_trainer_state(out / "checkpoint")["history"]] == list(range(1, 7))
    assert math.isfinite(summary["final_train_loss"])
    assert "held-out accuracy" in capsys.readouterr().out


def test_connector_benchmark_prints_its_rows_and_both_text_baselines(llm_dir, tmp_path, capsys) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "connectors.py"
    spec = importlib.util.spec_from_file_location("connector_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert set(benchmark.ANSWER_FORMAT) == set(benchmark.TS_KINDS)  # the zero-shot baseline is told every format

    code = benchmark.main(["--llm", str(llm_dir), "--connectors", "linear,mlp2x_gelu", "--steps", "2", "--warmup", "1",
                           "--train-size", "4", "--eval-size", "3", "--series-length", "32", "--speech-steps", "0",
                           "--text-lora-steps", "2", "--csv-eval", "4", "--csv-length", "40-60", "--out", str(tmp_path),
                           "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("workload: time-series attribute QA") and "acc spike_position" in printed
    assert "train wall" in printed and "CSV e2e" in printed and "CSV spike_position" in printed
    rows = json.loads((tmp_path / "results.json").read_text())["timeseries"]
    assert [row["connector"] for row in rows] == ["linear", "mlp2x_gelu", "text baseline (zero-shot)",
                                                  "text baseline (LoRA r=8, 2 steps)"]
    for row in rows:
        assert row["connector"] in printed and 0.0 <= row["metrics"]["accuracy"] <= 1.0
        assert len(row["predictions"]) == 3
    for row in rows[:3]:  # trained rows and the zero-shot baseline answered the CSV files too
        assert len(row["csv"]["answers"]) == 4 and set(row["csv"]["metrics"]) == {
            "accuracy", "accuracy/trend", "accuracy/spike_position"}
    assert rows[0]["wall_seconds"] > 0 and rows[2].get("wall_seconds") is None
    linear, mlp = rows[0]["trainable_parameters"], rows[1]["trainable_parameters"]
    assert 0 < linear < mlp and rows[2]["trainable_parameters"] == 0 and rows[3]["trainable_parameters"] > 0
    # The users' files: a header, a date column, some empty or NA cells (never a spike's), as people write them.
    files = sorted((tmp_path / "csv").glob("*.csv"))
    assert any(",\n" in path.read_text() or ",NA\n" in path.read_text() for path in files)
    assert len(files) == 4 and re.search(r"^date,\w+\n\d{4}-\d\d-\d\d,-?\d+\.\d\d$", files[0].read_text()[:60], re.M)

    # A checkpoint already trained (as the shipped connector is) is asked end to end without training anything.
    code = benchmark.main(["--llm", str(llm_dir), "--connectors", "none", "--native-checkpoint", rows[0]["checkpoint"],
                           "--no-text-baseline", "--train-size", "4", "--eval-size", "3", "--csv-eval", "2",
                           "--csv-length", "40", "--speech-steps", "0", "--out", str(tmp_path / "again"), "--no-progress"])
    assert code == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())["timeseries"]
    assert len(again) == 1 and again[0]["connector"].startswith("checkpoint ") and len(again[0]["csv"]["answers"]) == 2
    assert again[0]["wall_seconds"] == pytest.approx(rows[0]["wall_seconds"], abs=0.1)  # recorded by the training run
    with pytest.raises(SystemExit):
        benchmark.main(["--connectors", ",", "--no-progress"])  # names none: refused before anything loads


def test_step_labels_teach_a_spike_at_its_patch_centre(tmp_path) -> None:
    data = prepare_task("timeseries-qa", encoder="ts-patch@steps", train_size=6, eval_size=6, seed=2,
                        qa_kinds=("trend", "spike_position"), series_length=(64, 200), cache=FeatureCache(tmp_path),
                        progress=False)
    assert data.encoder == "ts-patch16@steps"
    for example, item in zip(data.eval, data.eval_references):
        labels = [label.rstrip(":") for label in example.media[0].token_texts]
        if item.kind == "spike_position":
            exact = int(item.answer)
            assert example.response == labels[exact // 16] and abs(int(example.response) - exact) <= 8
            assert data.grader(data.eval.index(example), example.response)["accuracy"] == 1.0  # the taught answer scores
        else:
            assert example.response == item.answer
    assert len({len(series) for series in data.eval_inputs}) > 1  # lengths drawn from the range
