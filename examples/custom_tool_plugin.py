"""A tool of your own, registered as a plugin, then called directly and planned with by the agent.

    pip install --no-deps examples/plugin      # optional: the entry point registers the tool for every program
    python examples/custom_tool_plugin.py [OUT_DIR]

The tool lives in examples/plugin/receipt_items.py (items, prices and total of a receipt from its text);
examples/plugin/pyproject.toml registers it under the `anymoda.tools` entry point, the same way anymoda's own
tools are registered. Offline: PP-OCR reads the receipt, the packaged Qwen2.5-Coder-0.5B plans and answers
(some 30-60 s on two CPU cores, plus a one-time conversion of the packaged LLM on the very first run).
"""

import sys
from pathlib import Path

from orchestrator import ToolRegistry
from orchestrator.agent import Orchestrator
from orchestrator.storage.sample_inputs import receipt_image

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "custom_tool_plugin")
out.mkdir(parents=True, exist_ok=True)

# The default registry holds the built-in tools and every tool an installed package declares under the
# `anymoda.tools` entry point. Without `pip install examples/plugin` the tool is not there, so we register
# the same class by hand: for this process only, with the same effect.
registry = ToolRegistry.default()
if "receipt-items" not in registry:
    sys.path.insert(0, str(Path(__file__).resolve().with_name("plugin")))
    from receipt_items import ReceiptItems

    registry.register(ReceiptItems, origin="examples/plugin, registered by hand")
print(f"receipt-items comes from: {registry.origin('receipt-items')}")

# A tool is callable on plain values, no store and no planner involved: the quickest way to try it out.
tool = registry.get("receipt-items")()
print("called directly:", tool(text="Bread   3.20\nMilk   1.10\nTOTAL   4.30", currency="EUR"))

# Now the agent plans with it: Orchestrator(registry=registry) plans over every tool of the registry. The
# planner's tool selector was trained on phrasings of the built-in tools; a plugin is known to it by the
# `phrasings` it declares and the first sentence of its description, and chosen where a request fits them.
orch = Orchestrator(registry=registry)

receipt = out / "receipt.png"
receipt_image().save(receipt)
result = orch.run("Read the receipt and list its items with their amounts", files=[receipt])

# What was planned and run: ocr reads the picture, receipt-items parses the text it read.
for task_id, task in result.tasks.items():
    print(f"task {task_id}: {task.tool} -> {task.status}")
print(f"answer: {result.answer}")

# The plugin's outputs are artifacts like any other: stored, with lineage back to the receipt.
run = orch.session(result.session)
parsed = next((t for t in result.tasks.values() if t.tool == "receipt-items" and t.status == "done"), None)
if parsed is not None:
    items = run.load(parsed.outputs["items"])
    print(f"items: {len(items)}; " + ", ".join(f"{i['item']} {i['amount']:.2f}" for i in items))
    print(f"total: {run.load(parsed.outputs['total'])}")
