"""A conversation over several turns, where later turns reuse what earlier turns made.

    python examples/conversation.py [OUT_DIR]

Everything runs offline on the packaged models: the Qwen2.5-Coder-0.5B planner plans each turn, PP-OCR
reads the receipt, Piper speaks. The first run converts the packaged LLM once (about a minute); after
that each turn takes some 15-40 s on two CPU cores.
"""

import sys
import time
from pathlib import Path

from orchestrator.agent import Orchestrator
from orchestrator.storage.sample_inputs import receipt_image

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "conversation")
out.mkdir(parents=True, exist_ok=True)

# A photo of a shop receipt, drawn on the spot (the package ships the generator, so no file is needed).
receipt = out / "receipt.png"
receipt_image().save(receipt)

# The Orchestrator is built from the settings (~/.anymoda/config.toml, ANYMODA_* variables): planner,
# experts, artifact store, run journal and checkpoints. A session is one conversation: every turn is a run
# of the same session, and the planner of a later turn is shown what the earlier ones asked, answered and made.
# Sessions live in the run journal under the anymoda home: orch.session("receipt-chat") in another process,
# tomorrow, continues the same conversation. This example starts a new one each time it runs.
orch = Orchestrator()
chat = orch.session(time.strftime("receipt-chat-%Y%m%d-%H%M%S"))
print(f"session: {chat.id}")


def show(turn: int, result) -> None:
    """Print one turn: the tools the plan ran, the answer, and the artifacts it delivered."""
    tools = [task.tool for task in result.tasks.values()]
    print(f"\n--- turn {turn} ({result.status}; tools: {', '.join(tools) or 'none'})")
    print(f"answer: {result.answer}")
    for artifact in result.artifacts:
        print(f"delivered: {artifact.id} ({artifact.kind.value})")


# Turn 1: a file comes with the request. The planner reads the receipt (OCR) and the answer quotes it.
first = chat.send("Read this receipt for me", files=[receipt])
show(1, first)

# Turn 2: no file, and "that" is the previous answer. The planner is offered the earlier turn's answer as
# `previous_answer` (and the newest artifact of each kind as `earlier_text`, `earlier_image`, ...), so the
# plan is text-to-speech on turn 1's output: nothing is read again.
second = chat.send("Now read that out loud")
show(2, second)

# The spoken answer's lineage leads back to turn 1: ask the session what the audio was made from.
turn_one_made = {first.answer_id, *(a for task in first.tasks.values() for a in task.outputs.values())}
speech = second.first("audio")
if speech is not None:
    path = chat.export(speech.id, out)  # the .wav file, named after the artifact
    print(f"saved: {path}")
    lineage = orch.store.ancestors(speech.id, session=chat.id)
    reused = [a.id for a in lineage if a.id in turn_one_made]
    print(f"turn 2 reused from turn 1: {', '.join(reused) or 'nothing'}")

# Turn 3: a question about the conversation itself is answered from the history, with no tool at all.
third = chat.send("What did I ask you first?")
show(3, third)

# Everything the conversation holds stays referable by id, in later turns and later processes.
print(f"\nthe session holds {len(chat.artifacts())} artifacts over {len(chat.history())} turns")
