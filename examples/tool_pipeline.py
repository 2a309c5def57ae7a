"""A multi-step tool pipeline written in Python: fixed steps, no planner, no LLM.

    python examples/tool_pipeline.py [OUT_DIR]

A receipt is read (PP-OCR), spoken (Piper), heard back (Whisper tiny.en) and the transcript compared with
what was read (MiniLM); beside it, on its own branch, a photo is classified (EfficientNet-Lite0). All the
models are the packaged offline ones; the whole run takes some 20-40 s on two CPU cores.
"""

import sys
from pathlib import Path

from orchestrator import ArtifactKind
from orchestrator.agent import Orchestrator
from orchestrator.storage.sample_inputs import eagle_photo_path, receipt_image
from orchestrator.workflows.pipeline import pipeline_function, step

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "tool_pipeline")
out.mkdir(parents=True, exist_ok=True)
receipt = out / "receipt.png"
receipt_image().save(receipt)  # a receipt drawn on the spot; the eagle photo ships with the package


# The function is called once, with handles instead of values, to record the graph: each step() is a node,
# its arguments say where its inputs come from (`read.text` is the ocr node's output named "text"), and
# the returned dict names the pipeline's outputs. Parameters are the inputs, annotated with their kinds
# (ArtifactKind.IMAGE, or the string "image").
@pipeline_function
def read_receipt_aloud(receipt: ArtifactKind.IMAGE, photo: ArtifactKind.IMAGE):
    read = step("ocr", image=receipt)                                  # text, plus a box per line
    spoken = step("text-to-speech", text=read.text)                     # the text, spoken
    heard = step("speech-recognition", audio=spoken.audio)              # ... and transcribed back
    check = step("sentence-similarity", source=read.text, sentences=heard.text)   # did it survive the round trip?
    label = step("image-classification", image=photo, top_k=3)           # an independent branch: runs alongside
    return {"text": read.text, "lines": read.regions, "speech": spoken.audio, "heard": heard.text,
            "agreement": check.scores, "photo_labels": label.labels}


# A pipeline is a workflow: validated against the tools' typed inputs and outputs before anything runs,
# and savable as the same YAML file `anymoda workflow run` takes.
workflow_file = read_receipt_aloud.save(out / "read-receipt-aloud.yaml")
print(f"workflow saved: {workflow_file}")

# Run it. Tasks start as soon as their own inputs exist; each output is stored as an artifact with lineage.
# Fixed graphs need no planner, and their answer is their outputs, so no LLM is loaded at all.
orch = Orchestrator(planner=None, composer=None)
result = read_receipt_aloud.run(orch, receipt=receipt, photo=eagle_photo_path())
print(f"status: {result.status}")

# result.outputs maps each output name to an artifact id; the run's session loads values and exports files.
run = orch.session(result.session)
for name, artifact_id in result.outputs.items():
    print(f"output {name}: {artifact_id} ({run.artifact(artifact_id).kind.value})")

print("read:", " | ".join(run.load(result.outputs["text"]).splitlines()))
print("heard:", run.load(result.outputs["heard"]))
agreement = run.load(result.outputs["agreement"])[0]["score"]
print(f"similarity of what was read and what was heard: {agreement:.2f}")
top = run.load(result.outputs["photo_labels"])[0]
print(f"the photo: {top['label']} ({top['score']:.0%})")
print("speech saved:", run.export(result.outputs["speech"], out))
