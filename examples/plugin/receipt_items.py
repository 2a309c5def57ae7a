"""An example anymoda tool: the items and prices of a receipt, and its total, read from the receipt's text.

A tool declares what it takes and makes (typed inputs and outputs, bounded params) and how it runs. This
one needs no model weights, so it subclasses WeightlessTool and builds its "model" (a parser) in code.
"""

import re

from orchestrator import ArtifactKind, Input, Output, Param
from orchestrator.tooling.tool import WeightlessTool

# "Croissant x4      11.00" -> ("Croissant x4", "11.00"); amounts with a decimal point or comma.
PRICED_LINE = re.compile(r"^(?P<item>.*?\S)\s+(?P<amount>\d{1,7}[.,]\d{2})\s*$")
TOTAL_WORDS = ("total", "amount due", "balance", "to pay")


class ReceiptParser:
    def __call__(self, text: str, currency: str) -> tuple[list[dict], str]:
        items, total = [], ""
        for line in text.splitlines():
            found = PRICED_LINE.match(line.strip())
            if not found:
                continue
            item, amount = found["item"], float(found["amount"].replace(",", "."))
            if any(word in item.lower() for word in TOTAL_WORDS):
                total = f"{amount:.2f} {currency}".strip()
            else:
                items.append({"item": item, "amount": amount})
        return items, total


class ReceiptItems(WeightlessTool):
    name = "receipt-items"                  # lowercase words joined by '-': what plans and workflows call
    task = "receipt-parsing"                # a task tag (Hugging Face style where one fits)
    description = (                         # the planner reads this: its first sentence above all
        "List the items on a receipt with their prices, and the receipt's total, from the receipt's text "
        "as OCR reads it. Returns a JSON list of {item, amount} and the total as text."
    )
    inputs = {"text": Input(ArtifactKind.TEXT, "the receipt's text, one line per row (an OCR output)")}
    outputs = {
        "items": Output(ArtifactKind.JSON, "list of {item, amount}, in the receipt's order"),
        "total": Output(ArtifactKind.TEXT, "the receipt's total"),   # empty when the receipt shows none
    }
    params = {"currency": Param(str, "", "the currency to write after the total, e.g. EUR")}
    phrasings = (                            # requests in users' words: how the planner learns to pick this tool
        "list the items on the receipt with their amounts",
        "what are the line items and prices on this receipt",
        "itemise the receipt",
    )
    default_model = "receipt-regex-v1"       # a weightless tool's "model" is the name of its method

    def build_method(self) -> ReceiptParser:
        return ReceiptParser()               # loaded once and kept in the model pool, like real weights

    def run(self, parser: ReceiptParser, inputs: dict, params: dict) -> dict:
        items, total = parser(inputs["text"], params["currency"])
        return {"items": items, "total": total}
