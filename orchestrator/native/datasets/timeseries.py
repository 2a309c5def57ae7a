"""ChatTS-style synthetic time series: built from declared attributes, with questions whose answers follow from them.

A series is a sum of parts drawn from a seeded generator, in "shape units" first and then mapped to
``offset + scale * shape`` so that levels and magnitudes vary over orders of magnitude (the encoder
normalises them away and tells the LLM the offset and scale). Every attribute is recorded in the
units of the returned array, so tests and scorers can check it against the values directly.

The parts keep each question unambiguous: a trend changes the series by 3.5-6 shape units end to end
(flat: 0), a seasonal cycle repeats at least four times with amplitude 0.5-1.5, spikes are single
steps of 4-7 units at least 12 steps apart, and level shifts (up or down trends only, at most 30% of
the trend's change) never reverse the trend's direction.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError

from . import QAItem, check_count, parse_choice, parse_number, parse_yes_no

__all__ = ["SeriesAttributes", "QAItem", "make_series", "timeseries_qa", "score_answer", "describe_series",
           "QA_KINDS", "TRENDS"]

TRENDS = ("up", "down", "flat")
QA_KINDS = ("trend", "seasonality", "period", "spike_count", "spike_position", "description")
MIN_LENGTH, MAX_LENGTH = 32, 8192
SPIKE_MARGIN = 4        # spikes stay this many steps inside either end
SPIKE_SEPARATION = 12   # steps between two spikes, so that each is its own answer
DEFAULT_POSITION_TOLERANCE = 8  # half a default patch: the encoder cannot place a spike finer than its patch

_TREND_WORDS = {
    "up": ("up", "upward", "upwards", "increasing", "increases", "rising", "rises", "growing", "grows", "ascending"),
    "down": ("down", "downward", "downwards", "decreasing", "decreases", "falling", "falls", "declining", "declines",
             "descending"),
    "flat": ("flat", "stable", "steady", "constant", "no trend", "unchanged", "horizontal", "stationary"),
}


@dataclass
class SeriesAttributes:
    trend: str                               # "up" | "down" | "flat"
    slope: float                             # change per step, in the series' units (0 when flat)
    seasonal: bool
    period: int | None                       # steps per cycle when seasonal
    amplitude: float                         # of the seasonal cycle (0 when not seasonal)
    noise: float                             # standard deviation of the Gaussian noise
    spikes: list[tuple[int, float]]          # (position, height): one-step spikes
    level_shifts: list[tuple[int, float]]    # (position, size): the level changes from this step on
    offset: float                            # the series' baseline level
    scale: float                             # shape units -> series units
    missing: list[int] = field(default_factory=list)  # positions set to NaN


_FORCEABLE = {"trend", "seasonal", "period", "amplitude", "noise", "spike_count", "spikes", "level_shift_count",
              "level_shifts", "offset", "scale", "missing_fraction"}


def _spike_positions(rng: np.random.Generator, length: int, count: int) -> list[int]:
    positions: list[int] = []
    for _ in range(1000):  # rejection sampling; far more tries than any feasible count needs
        if len(positions) == count:
            break
        candidate = int(rng.integers(SPIKE_MARGIN, length - SPIKE_MARGIN))
        if all(abs(candidate - p) >= SPIKE_SEPARATION for p in positions):
            positions.append(candidate)
    if len(positions) < count:
        raise InvalidInputError(f"time series: {count} spikes {SPIKE_SEPARATION} steps apart do not fit in {length} steps")
    return sorted(positions)


def make_series(rng: np.random.Generator, length: int = 256, **forced: Any) -> tuple[np.ndarray, SeriesAttributes]:
    """One series and its attributes; ``forced`` fixes any of: trend, seasonal, period, amplitude, noise,
    spike_count, spikes, level_shift_count, level_shifts, offset, scale, missing_fraction (shape units for
    amplitude, noise, spike heights and level-shift sizes; the rest in the series' own units)."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(
            f"time series: rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInputError(f"time series: length must be an integer from {MIN_LENGTH} to {MAX_LENGTH}, got {length!r}")
    unknown = set(forced) - _FORCEABLE
    if unknown:
        raise InvalidInputError(
            f"time series: cannot force {', '.join(sorted(unknown))}; forceable: {', '.join(sorted(_FORCEABLE))}")

    # Every draw happens whether or not it is forced, so forcing one attribute leaves the others as they were.
    trend = str(rng.choice(TRENDS))
    change = float(rng.uniform(3.5, 6.0))
    seasonal = bool(rng.random() < 0.5)
    period = int(rng.integers(8, length // 4 + 1))
    amplitude = float(rng.uniform(0.5, 1.5))
    phase = float(rng.uniform(0, 2 * np.pi))
    noise = float(rng.uniform(0.05, 0.3))
    spike_count = int(rng.choice([0, 0, 1, 1, 2, 3]))
    level_shift_count = int(rng.random() < 0.3)
    offset = float(np.round(rng.uniform(-100, 100), 2))
    scale = float(10 ** rng.uniform(-1, 2))

    trend = forced.get("trend", trend)
    if trend not in TRENDS:
        raise InvalidInputError(f"time series: trend must be one of {', '.join(TRENDS)}, got {trend!r}")
    seasonal = bool(forced.get("seasonal", seasonal))
    period = forced.get("period", period)
    if seasonal and (not isinstance(period, int) or not 4 <= period <= length // 4):
        raise InvalidInputError(f"time series: period must be an integer from 4 to length/4 = {length // 4}, got {period!r}")
    amplitude = float(forced.get("amplitude", amplitude))
    noise = float(forced.get("noise", noise))
    offset = float(forced.get("offset", offset))
    scale = float(forced.get("scale", scale))
    if not scale > 0 or not np.isfinite(offset) or amplitude < 0 or noise < 0:
        raise InvalidInputError("time series: scale must be positive, offset finite, amplitude and noise non-negative")

    steps = np.arange(length, dtype=np.float64)
    slope = {"up": 1.0, "down": -1.0, "flat": 0.0}[trend] * change / (length - 1)
    shape = slope * steps
    if seasonal:
        shape += amplitude * np.sin(2 * np.pi * steps / period + phase)
    shape += noise * rng.standard_normal(length)

    if "level_shifts" in forced:
        level_shifts = [(int(p), float(s)) for p, s in forced["level_shifts"]]
    else:
        count = forced.get("level_shift_count", level_shift_count) if trend != "flat" else 0
        positions = sorted(int(p) for p in rng.integers(length // 8, 7 * length // 8, size=count))
        # A shift of at most 30% of the trend's change, either way, never turns the trend around.
        level_shifts = [(p, float(rng.choice([-1, 1]) * rng.uniform(0.15, 0.3) * change)) for p in positions]
    for position, size in level_shifts:
        if not 0 < position < length:
            raise InvalidInputError(f"time series: level shift position {position} is outside 1..{length - 1}")
        shape[position:] += size

    if "spikes" in forced:
        spikes = [(int(p), float(h)) for p, h in forced["spikes"]]
    else:
        count = forced.get("spike_count", spike_count)
        check_count(count, "spike_count")
        positions = _spike_positions(rng, length, count)
        spikes = [(p, float(rng.choice([-1, 1], p=[0.2, 0.8]) * rng.uniform(4.0, 7.0))) for p in positions]
    for position, height in spikes:
        if not 0 <= position < length:
            raise InvalidInputError(f"time series: spike position {position} is outside 0..{length - 1}")
        shape[position] += height

    values = offset + scale * shape
    missing_fraction = float(forced.get("missing_fraction", 0.0))
    if not 0.0 <= missing_fraction <= 0.5:
        raise InvalidInputError(f"time series: missing_fraction must be between 0 and 0.5, got {missing_fraction!r}")
    spike_steps = {p for p, _ in spikes}
    candidates = np.array([i for i in range(length) if i not in spike_steps])  # a missing spike would be no spike
    missing = sorted(int(i) for i in rng.choice(candidates, size=int(round(missing_fraction * length)), replace=False))
    values[missing] = np.nan

    attributes = SeriesAttributes(
        trend=trend, slope=slope * scale, seasonal=seasonal, period=period if seasonal else None,
        amplitude=amplitude * scale if seasonal else 0.0, noise=noise * scale,
        spikes=[(p, h * scale) for p, h in spikes], level_shifts=[(p, s * scale) for p, s in level_shifts],
        offset=offset, scale=scale, missing=missing,
    )
    return values, attributes


# ---------------------------------------------------------------------------------------------- questions

_QUESTIONS = {
    "trend": ("What is the overall trend of this series?", "Is this series going up, down or staying flat?",
              "Which way does the series trend: up, down or flat?", "Describe the trend in one word."),
    "seasonality": ("Does this series show a repeating cycle?", "Is there seasonality in this series?",
                    "Does the series repeat periodically?"),
    "period": ("How many steps does one cycle last?", "What is the period of the cycle, in steps?",
               "Every how many steps does the pattern repeat?"),
    "spike_count": ("How many spikes does the series have?", "Count the sudden spikes in this series.",
                    "How many one-step spikes are there?"),
    "spike_position": ("At which step is the spike?", "Where does the spike occur (step index)?",
                       "At what position is the sudden spike?"),
    "description": ("Describe this time series.", "Summarise the series briefly.", "What does this series look like?"),
}

_TREND_PHRASES = {"up": "rises steadily", "down": "falls steadily", "flat": "stays flat"}


def describe_series(attributes: SeriesAttributes) -> str:
    """A one-sentence caption of a series that names its trend, cycle, spikes and level changes."""
    parts = [f"The series {_TREND_PHRASES[attributes.trend]}"]
    parts.append(f", repeating a cycle every {attributes.period} steps" if attributes.seasonal else ", with no repeating cycle")
    spikes = [p for p, _ in attributes.spikes]
    if not spikes:
        parts.append(" and has no spikes")
    elif len(spikes) == 1:
        parts.append(f" and has one spike near step {spikes[0]}")
    else:
        parts.append(f" and has {len(spikes)} spikes, near steps {', '.join(map(str, spikes[:-1]))} and {spikes[-1]}")
    for position, _ in attributes.level_shifts:
        parts.append(f"; its level changes suddenly at step {position}")
    return "".join(parts) + "."


def _answer(kind: str, attributes: SeriesAttributes) -> str:
    if kind == "trend":
        return attributes.trend
    if kind == "seasonality":
        return "yes" if attributes.seasonal else "no"
    if kind == "period":
        return str(attributes.period)
    if kind == "spike_count":
        return str(len(attributes.spikes))
    if kind == "spike_position":
        return str(attributes.spikes[0][0])
    return describe_series(attributes)


def _forced_for(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    """What a question needs of its series: a cycle to have a period, exactly one spike to locate it."""
    if kind == "period":
        return {"seasonal": True}
    if kind == "spike_position":
        return {"spike_count": 1}
    if kind == "seasonality":
        return {"seasonal": bool(rng.random() < 0.5)}  # balanced yes/no, whatever the prior
    return {}


def timeseries_qa(n: int, seed: int, length: int | tuple[int, int] = 256, *, kinds: tuple[str, ...] = QA_KINDS,
                  missing_fraction: float = 0.0) -> list[tuple[np.ndarray, QAItem]]:
    """``n`` (series, question) pairs, the question kinds in equal shares and shuffled, all from ``seed``.

    ``length`` is every series' length, or ``(shortest, longest)``: each series' length drawn from that
    range (from a stream of its own, so the series themselves are drawn as with a fixed length).
    """
    check_count(n)
    unknown = set(kinds) - set(QA_KINDS)
    if not kinds or unknown:
        raise InvalidInputError(f"time series QA: kinds must be among {', '.join(QA_KINDS)}, got {kinds!r}")
    if isinstance(length, tuple):
        if len(length) != 2 or not all(isinstance(v, int) and MIN_LENGTH <= v <= MAX_LENGTH for v in length) \
                or length[0] > length[1]:
            raise InvalidInputError(f"time series QA: a length range must be (shortest, longest) within "
                                    f"{MIN_LENGTH}..{MAX_LENGTH}, got {length!r}")
        lengths = np.random.default_rng([seed, 7919]).integers(length[0], length[1] + 1, size=n).tolist()
    else:
        lengths = [length] * n
    rng = np.random.default_rng(seed)
    plan = [kinds[i % len(kinds)] for i in range(n)]
    rng.shuffle(plan)
    items = []
    for kind, size in zip(plan, lengths, strict=True):
        values, attributes = make_series(rng, int(size), missing_fraction=missing_fraction, **_forced_for(kind, rng))
        question = str(rng.choice(_QUESTIONS[kind]))
        truth = asdict(attributes) | {"length": int(size)}
        items.append((values, QAItem(question, _answer(kind, attributes), kind, truth)))
    return items


# ---------------------------------------------------------------------------------------------- scoring

_NEGATED_CYCLE = re.compile(r"\b(no|not|without|never)\b[^.,;]*\b(cycl\w*|period\w*|seasonal\w*|repeat\w*)")
_CYCLE = re.compile(r"\b(cycl\w*|periodic\w*|seasonal\w*|repeat\w*|oscillat\w*)")


def _claims_cycle(text: str) -> bool:
    lowered = text.lower()
    return not _NEGATED_CYCLE.search(lowered) and bool(_CYCLE.search(lowered))


def score_answer(item: QAItem, predicted: str, tolerance: int = DEFAULT_POSITION_TOLERANCE) -> bool:
    """Whether ``predicted`` answers ``item`` correctly.

    Trend direction and spike counts must be exact, yes/no must match, a spike position may be off by
    ``tolerance`` steps, a period by 10% (at least 1 step); a description must get the trend and
    whether there is a cycle right.
    """
    truth = item.attributes
    if item.kind == "trend":
        return parse_choice(predicted, _TREND_WORDS) == truth["trend"]
    if item.kind == "seasonality":
        return parse_yes_no(predicted) is truth["seasonal"]
    if item.kind == "period":
        guess = parse_number(predicted)
        return guess is not None and abs(guess - truth["period"]) <= max(1.0, 0.1 * truth["period"])
    if item.kind == "spike_count":
        guess = parse_number(predicted)
        return guess is not None and guess == len(truth["spikes"])
    if item.kind == "spike_position":
        guess = parse_number(predicted)
        return guess is not None and abs(guess - truth["spikes"][0][0]) <= tolerance
    if item.kind == "description":
        # The description's own wording ("rises", "falls") counts as the trend; cycle words as seasonality.
        return (parse_choice(predicted, _TREND_WORDS) == truth["trend"]
                and _claims_cycle(predicted) == truth["seasonal"])
    raise InvalidInputError(f"time series QA: unknown question kind {item.kind!r}")
