"""The structure of a receipt's text (shop, date, item rows, totals) and the questions it answers directly.

A 0.5B LLM reading OCR text answers "how much was the hobbit?" with the total, or "when did I buy this?"
with a sentence about itself; an extractive QA model cannot list items or count them at all. A receipt
has a regular shape (the shop's name on top, a date, one row per item with its price on the right,
then subtotal / tip / tax / total rows), so the questions people ask about receipts (the total, the tip,
an item's price, the date, the shop, what was bought and how many things) are answered from that
shape, with the rows they came from as evidence. Anything else, or a document that is not a receipt,
goes to the reader model as before (``answer`` returns None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A price at the end of a row: "12.99", "$1,234.50", "3,80 €" (two decimals; a quantity such as "2.5L" or
# "x2" is not a price).
_PRICE = re.compile(r"(?<![\w.,])[-–]?[$€£¥]?\s?(\d{1,3}(?:[,.\s]\d{3})*|\d+)[.,](\d{2})\s?[$€£¥]?(?:\s?[A-Z]{1,3})?$")
_MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|august|"
           "september|october|november|december")
_DATE = re.compile(
    r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}(?:st|nd|rd|th)?[\s-]+(?:" + _MONTHS
    + r")\.?,?[\s-]+\d{2,4}"
    r"|(?:" + _MONTHS + r")\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{2,4})\b", re.IGNORECASE)
# "16:05", "4.05 pm"; "4.50" alone is a price, not a time.
_TIME = re.compile(r"\b(?:([01]?\d|2[0-3]):([0-5]\d)(?:\s?[ap]\.?m\.?)?|(1[0-2]|0?\d)[.:]([0-5]\d)\s?[ap]\.?m\.?)(?![.\d])",
                   re.IGNORECASE)

# Rows that sum up or settle the bill rather than list something bought, by what their label starts with.
SUMMARY_KINDS = {
    "subtotal": ("subtotal", "sub total", "sub-total", "net"),
    "total": ("total", "grand total", "amount due", "balance due", "to pay", "amount", "sum"),
    "tip": ("tip", "gratuity"),
    "service": ("service", "service charge"),
    "tax": ("tax", "vat", "gst", "hst", "sales tax"),
    "discount": ("discount", "savings", "coupon"),
    "change": ("change",),
    "payment": ("cash", "card", "paid", "visa", "mastercard", "amex", "debit", "credit", "tendered"),
}


@dataclass(frozen=True)
class Row:
    index: int  # the row's position in the OCR text
    text: str
    label: str  # the row without its price
    price: str | None  # as printed, e.g. "12.99"
    kind: str  # "item", one of SUMMARY_KINDS, or "other"


@dataclass
class Receipt:
    rows: list[Row]
    shop: Row | None = None
    date: tuple[Row, str] | None = None
    time: tuple[Row, str] | None = None
    items: list[Row] = field(default_factory=list)

    def summary(self, kind: str) -> Row | None:
        found = [row for row in self.rows if row.kind == kind]
        return found[-1] if found else None  # a reprinted total comes last


@dataclass(frozen=True)
class LayoutAnswer:
    answer: str
    rows: tuple[int, ...]  # the rows it was read from
    kind: str  # which question it answered: total, item-price, date, shop, items, item-count, ...
    note: str = ""


def _summary_kind(label: str) -> str | None:
    words = re.sub(r"[^a-z ]+", " ", label.lower()).split()
    text = " ".join(words)
    for kind in ("subtotal", "tip", "service", "tax", "discount", "change", "total", "payment"):
        for start in SUMMARY_KINDS[kind]:
            if text == start or text.startswith(start + " ") or (kind == "total" and text.endswith(" total")):
                return kind
    return None


def parse_receipt(text: str) -> Receipt | None:
    """The receipt in an OCR text (one row per line), or None when the text does not look like one: a
    receipt has at least two priced rows, one of them a total, or at least three priced rows."""
    rows = []
    for index, line in enumerate(text.splitlines()):
        line = " ".join(line.split())
        if not line:
            continue
        match = _PRICE.search(line)
        price = label = None
        if match and not _DATE.search(line[match.start():]) and not _TIME.search(line[match.start():]):
            label = line[:match.start()].strip(" :.-–\t")
            price = match.group(0).strip(" \t")
            price = re.sub(r"^[-–]\s?", "-", price)
        if price is None or not re.search(r"[A-Za-z]", label or ""):
            rows.append(Row(index, line, line, None, "other"))
            continue
        kind = _summary_kind(label) or "item"
        rows.append(Row(index, line, label, price, kind))
    priced = [row for row in rows if row.price]
    if len(priced) < 3 and not (len(priced) >= 2 and any(row.kind == "total" for row in priced)):
        return None
    receipt = Receipt(rows)
    # Items are the priced rows above the first summary row (a "Card 12.65" row at the bottom is payment).
    first_summary = next((i for i, row in enumerate(rows) if row.price and row.kind != "item"), len(rows))
    receipt.items = [row for row in rows[:first_summary] if row.kind == "item"]
    for row in rows:
        if receipt.date is None and (date := _DATE.search(row.text)):
            receipt.date = (row, date.group(0))
        if receipt.time is None and (time := _TIME.search(row.text)) and not row.price:
            receipt.time = (row, time.group(0))
    first_item = receipt.items[0].index if receipt.items else (priced[0].index if priced else len(rows))
    # The shop's name: the first row above the items with letters and without a date, a price or an address number.
    for row in rows:
        if row.index >= first_item:
            break
        if row.price or _DATE.search(row.text) or _TIME.search(row.text) or not re.search(r"[A-Za-z]{2}", row.text):
            continue
        if re.match(r"^\d", row.text) or re.match(r"^(date|time|table|till|order|tel|phone|receipt)\b", row.text, re.I):
            continue
        receipt.shop = row
        break
    return receipt


_WORDS = re.compile(r"[a-z0-9]+")
# Words of a question that say what is asked, not which thing it is about.
_QUESTION_WORDS = frozenset("""
a an the this that these those it its is are was were be been do did does done i me my mine we us our you your
what which who whom whose when where why how much many much price prices cost costs costed spend spent pay paid
paying charge charged charges total amount bill receipt here there on in at for of from to with by and or please
pls tell say give show read out loud aloud just only buy bought get got purchase purchased order ordered item items
thing things stuff money euros dollars pounds did leave left have had can could would will shop store
come came incl including inclusive plus after before excluding excl without damage whats how's
place restaurant cafe station pharmacy chemist market supermarket bakery bar pub diner garage business company
invoice owe owed owing due one ones
""".split())


# What a whole receipt is for ("how much was dinner?"): a question about it asks for the total.
_OCCASIONS = frozenset("""
dinner lunch breakfast brunch supper meal food drinks groceries grocery shopping trip visit everything all altogether
overall whole sum fill refill haul purchase purchases
""".split())


def _content_words(text: str) -> list[str]:
    # A lone letter is what is left of a contraction ("what's", "didn't"), not a thing asked about.
    return [w for w in _WORDS.findall(text.lower()) if w not in _QUESTION_WORDS and (len(w) > 1 or w.isdigit())
            and w not in ("ll", "re", "ve")]


def _stem(word: str) -> str:
    return re.sub(r"(ies|es|s)$", "", word) if len(word) > 3 else word


def matching_items(receipt: Receipt, question: str) -> list[Row]:
    """The item rows whose label shares the question's content words (plural and case aside), best first."""
    wanted = {_stem(w) for w in _content_words(question)}
    if not wanted:
        return []
    scored = []
    for row in receipt.items:
        have = {_stem(w) for w in _WORDS.findall(row.label.lower())}
        overlap = len(wanted & have)
        if overlap:
            scored.append((overlap / len(wanted), overlap / max(len(have), 1), row))
    scored.sort(key=lambda s: (-s[0], -s[1]))
    return [row for *_, row in scored]


_ASK_COUNT = re.compile(r"\bhow many\b", re.I)
_ASK_LIST = re.compile(
    r"\b(list|itemi[sz]e|what (?:did|have) (?:i|we) (?:buy|bought|get|got|order|ordered|purchase|purchased|have|had)"
    r"|what (?:items|things|products|did i pay for)|which (?:items|things|products)|what(?:'s| is| was) (?:on|in) (?:it|this|the)"
    r"|(?:items|things|products) (?:on|in|did|i))\b", re.I)
_ASK_TIME = re.compile(r"\bwhat time\b|\bwhich time\b|\bat what time\b|\bhow late\b", re.I)
_ASK_DATE = re.compile(r"\b(when|wen|whn|date|what day|which day|dated)\b", re.I)  # as people type it
_ASK_SHOP = re.compile(
    r"\b(shop|store|restaurant|cafe|café|coffee shop|place|merchant|business|station|pharmacy|chemist|company|vendor|"
    r"seller|supermarket|market|bakery|bar|pub|diner|garage|who\b.*\b(?:from|issued|sold))\b|\bwhere\b.*\b(?:from|buy|get|"
    r"bought|got|shop|eat|ate|go|went)\b|\bname of\b|\bwho (?:is|was) it from\b", re.I)
_ASK_PAYMENT = re.compile(r"\bhow (?:did|do|was|were|is)\b.*\bpa(?:y|id)\b|\bpayment (?:method|type)\b|"
                          r"\bpa(?:y|id) (?:by|with|in|on) (?:card|cash)\b|"
                          r"\b(?:card|cash) or (?:by |on |with |in |a |my )?(?:card|cash)\b", re.I)
_ASK_AMOUNT = re.compile(r"\b(how much|price|cost|costs|spend|spent|pay|paid|charge|charged|total|amount|owe|bill|"
                         r"tip|tax|vat|service|discount|change|subtotal|damage|c[oa]me to)\b", re.I)


def answer(receipt: Receipt, question: str) -> LayoutAnswer | None:
    """The answer the receipt's structure gives to ``question``, or None when the question is not one of the
    kinds it answers reliably (then a reader model should try)."""
    q = " ".join(question.split())
    if _ASK_PAYMENT.search(q) and not re.search(r"\bhow much\b", q, re.I):
        paid = next((row for row in reversed(receipt.rows) if row.kind == "payment" or (
            not row.price and re.match(r"^(paid|cash|card|visa|mastercard|amex|debit|credit|contactless)\b", row.text, re.I))),
            None)
        if paid is None:
            return LayoutAnswer("", (), "payment", note="the receipt does not say how it was paid")
        return LayoutAnswer(paid.text, (paid.index,), "payment")
    # "what's due?" asks for the amount; "when is it due?" for a date.
    asks_amount = bool(_ASK_AMOUNT.search(q)) or bool(re.search(r"\bdue\b", q, re.I) and not _ASK_DATE.search(q))
    if _ASK_COUNT.search(q) and not re.search(r"\bhow many (?:times|days|hours|minutes|people|persons|guests)\b", q, re.I):
        if asks_amount and not re.search(r"\b(items?|things?|products?|lines?|different|distinct|articles?)\b", q, re.I):
            return None
        if not receipt.items:
            return None
        names = ", ".join(row.label for row in receipt.items)
        return LayoutAnswer(f"{len(receipt.items)} items: {names}", tuple(r.index for r in receipt.items), "item-count")
    if _ASK_LIST.search(q) and not re.search(r"\bhow much\b", q, re.I):
        if not receipt.items:
            return None
        return LayoutAnswer(", ".join(f"{row.label} ({row.price})" for row in receipt.items),
                            tuple(r.index for r in receipt.items), "items")
    if _ASK_TIME.search(q) and receipt.time:
        row, time = receipt.time
        return LayoutAnswer(time, (row.index,), "time")
    if _ASK_DATE.search(q) and not asks_amount and receipt.date:
        row, date = receipt.date
        time = receipt.time[1] if receipt.time and receipt.time[0] is row else ""
        return LayoutAnswer(f"{date} {time}".strip(), (row.index,), "date")
    if _ASK_SHOP.search(q) and not asks_amount and receipt.shop:
        return LayoutAnswer(receipt.shop.text, (receipt.shop.index,), "shop")
    if not asks_amount:
        return None
    lowered = q.lower()
    if re.search(r"\b(?:before|excluding|excl\.?|without|pre)[- ](?:the\s+)?(?:tax|vat|gst|tip|service)\b", lowered):
        row = receipt.summary("subtotal")
        return LayoutAnswer(row.price or "", (row.index,), "subtotal") if row else None
    # "incl. the service charge", "with tip", "after tax": the bill with it, which is the total.
    with_extra = re.search(r"\b(?:incl\.?|including|inclusive of|with|plus|after)\s+(?:the\s+|a\s+)?"
                           r"(?:tax|vat|gst|tip|service|gratuity)\b", lowered)
    for kind in ("tip", "tax", "service", "discount", "subtotal", "change"):
        names = SUMMARY_KINDS[kind] + (("sub-total",) if kind == "subtotal" else ())
        if with_extra and kind != "subtotal":
            continue
        if kind == "subtotal" or not re.search(r"\btotal\b", lowered):
            if any(re.search(rf"\b{re.escape(name)}\b", lowered) for name in names if name not in ("net", "sum")):
                row = receipt.summary(kind)
                if row is None:
                    return LayoutAnswer("", (), kind, note=f"the receipt has no {kind} line")
                return LayoutAnswer(row.price or "", (row.index,), kind)
    items = matching_items(receipt, q)
    if with_extra and not items and (total := receipt.summary("total")) is not None:
        return LayoutAnswer(total.price or "", (total.index,), "total")
    if items:
        return LayoutAnswer(items[0].price or "", (items[0].index,), "item-price")
    total = receipt.summary("total")
    shop_words = {_stem(w) for w in _WORDS.findall(receipt.shop.text.lower())} if receipt.shop else set()
    named = [w for w in _content_words(q) if _stem(w) not in shop_words and w not in _OCCASIONS]
    if named and not re.search(r"\b(total|altogether|in all|overall|whole|all)\b", lowered):
        # The question names something no item is called ("what did I spend on fuel" over "Unleaded 38.2L").
        # The total would be a guess, and so would a synonym (a 0.5B model and MiniLM both match "coffee" to
        # "Orange juice" over "Flat white"): the items with their prices let the person see for themselves.
        if not receipt.items:
            return None
        listing = ", ".join(f"{row.label} ({row.price})" for row in receipt.items)
        return LayoutAnswer(listing, tuple(r.index for r in receipt.items), "items",
                            note=f"no item on the receipt is called {' '.join(named)!r}; these are its items")
    if total is None:
        return None
    return LayoutAnswer(total.price or "", (total.index,), "total")
