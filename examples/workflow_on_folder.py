"""A workflow file run on every file of a folder: a run per file, resumable, with a table of results.

    python examples/workflow_on_folder.py [OUT_DIR]

The workflow is examples/receipt-total.yaml (PP-OCR reads each receipt, MiniLM finds the total's line, Piper
says it). The same as `anymoda workflow run examples/receipt-total.yaml --batch receipts/ --out results/`.
Offline, some 30-60 s for the four files on two CPU cores.
"""

import sys
from pathlib import Path

from PIL import Image

from orchestrator.agent import Orchestrator
from orchestrator.storage.sample_inputs import receipt_image
from orchestrator.workflows.batch import run_batch
from orchestrator.workflows.definition import Workflow

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "workflow_on_folder")
folder = out / "receipts"
folder.mkdir(parents=True, exist_ok=True)

# A folder of inputs: three receipts from different shops, drawn on the spot, and a blank page (no text,
# so the workflow's condition skips finding and speaking a total for it: that file is still a result).
shops = {"bakery": ("CORNER BAKERY", "42.50"), "grocer": ("GREEN GROCER", "17.35"),
         "books": ("PAGE TURNER BOOKS", "63.00")}
for stem, (shop, total) in shops.items():
    lines = [(shop, "center"), ("", None), ("Item one               10.00", "left"),
             ("Item two                5.00", "left"), ("", None), (f"TOTAL {total:>22}", "left"),
             ("Thank you!", "center")]
    receipt_image(lines).save(folder / f"{stem}.png")
Image.new("RGB", (400, 300), "white").save(folder / "blank.png")

# Load the workflow file: it is parsed, then type-checked against the installed tools (a wrong kind, an
# unknown tool or a typo in a reference is reported as file:line before anything runs).
workflow = Workflow.load(Path(__file__).with_name("receipt-total.yaml"))

# One run per file, two at a time. Each file's outputs are saved under OUT/results/<file stem>/, and every
# file's end is recorded at once in batch-state.jsonl: run it again and finished files are skipped, runs
# that were cut off are resumed. results.csv and results.jsonl hold a row per file.
orch = Orchestrator(planner=None, composer=None)  # a workflow needs no planner and no LLM
report = run_batch(orch, workflow, folder, out / "results", jobs=2,
                   on_row=lambda row: print(f"finished {row.file}: {row.status} in {row.seconds:.1f} s"))

print(f"\n{report.counts()}; table: {report.csv_path}")
for row in report.rows:  # row.outputs: output name -> {"files": [saved paths], "text": the text, for texts}
    found = row.outputs.get("total_line", {}).get("text", "(no text: nothing to find)")
    spoken = row.outputs.get("spoken", {}).get("files", ["(nothing spoken)"])[0]
    print(f"{row.file:>10}: {found:<14} {spoken}" + (f"  [error: {row.error}]" if row.error else ""))

# Run the same batch again: every file is already done (same content, same workflow), so nothing runs.
again = run_batch(orch, workflow, folder, out / "results", jobs=2)
print(f"\nsecond time: {again.counts()}")
