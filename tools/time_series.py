"""Describe a time series in words and numbers: trend, seasonality, noise, spikes and level shifts.

A statistical decomposition rather than a learned model, so every number can be traced:

    y = trend (line + level shifts) + seasonal (harmonics of one period) + spikes + noise

estimated in a few alternating rounds, each piece with a robust method:

- spikes: robust z-score of the deseasonalised series against the median of the 4 points before or
  after (the closer), so a spike is judged against its neighbours and neither a trend nor a step can
  hide or fake one;
- level shifts: binary segmentation of the deseasonalised, spike-free series (the t statistic of a step
  fitted together with the segment's line, maximised over the split point), each change point then
  re-optimised between its neighbours, all steps and one slope finally fitted jointly;
- trend: Theil-Sen line (median of pairwise slopes) of the series with its level shifts taken out, with
  its 95 % interval; R^2 of that line and the trend strength 1 - var(R) / var(T + R); its shape
  (straight, accelerating, decelerating, reversing) from the two halves' Theil-Sen slopes;
- seasonality: the first autocorrelation peak (biased estimate, via FFT), refined to a fraction of a
  step by the period whose harmonics (up to 4) carry the most periodogram power, then a harmonic
  regression at that period; strength 1 - var(R) / var(S + R);
- noise: 1.4826 * MAD of the final residual (a standard deviation for Gaussian noise), and the same of
  its first differences / sqrt(2), which tells point-to-point noise from slow wandering.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import (
    SECONDS_UNITS,
    TIME_UNIT_EPOCH,
    TimeSeries,
    duration_text,
    has_clock_times,
    time_text,
)
from orchestrator.storage.render import pyplot, time_axis
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, WeightlessTool

METHOD = "statistical"
MIN_POINTS = 8
MAX_POINTS = 200_000  # the period search fits ~80 regressions over the whole series
MAX_CHANNELS = 64
MAX_LISTED = 50  # spikes / shifts listed per channel; the counts are always complete
MAD_TO_SD = 1.4826
ROUNDS = 3
MEDIAN4_SPREAD = math.sqrt(1.343)
SPIKE_SIDE = 4  # a spike is judged against the 4 points on either side: bursts of up to 3 are still spikes


@dataclass(frozen=True)
class _Method:
    """What "loading" the statistical describer yields: its name and version, for the outputs' metadata."""

    name: str = METHOD
    version: int = 1


# ------------------------------------------------------------------------------------------ statistics


def robust_sd(values: np.ndarray) -> float:
    """1.4826 * MAD; falls back to the mean absolute deviation when over half the values are equal."""
    if values.size == 0:
        return 0.0
    deviation = np.abs(values - np.median(values))
    sd = MAD_TO_SD * float(np.median(deviation))
    return sd if sd > 0 else 1.2533 * float(deviation.mean())


def theil_sen(t: np.ndarray, y: np.ndarray, max_points: int = 1000) -> tuple[float, float, float, float]:
    """Slope, intercept and the slope's 95 % interval; long series are thinned evenly (pairs grow as n^2)."""
    from scipy.stats import theilslopes

    if t.size > max_points:
        pick = np.linspace(0, t.size - 1, max_points).round().astype(int)
        t, y = t[pick], y[pick]
    result = theilslopes(y, t, alpha=0.95)
    return float(result.slope), float(result.intercept), float(result.low_slope), float(result.high_slope)


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Biased autocorrelation (it decays with the lag, so a period beats its own multiples)."""
    x = x - x.mean()
    n = x.size
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    return acf / acf[0] if acf[0] > 0 else np.zeros(n)


def harmonic_fit(t: np.ndarray, x: np.ndarray, period: float) -> tuple[np.ndarray, float]:
    """The zero-mean periodic component of ``x`` (up to 4 harmonics of ``period``) and the variance it explains."""
    harmonics = max(1, min(4, int(period // 2)))
    angle = 2 * np.pi * np.outer(t, np.arange(1, harmonics + 1)) / period
    design = np.column_stack([np.ones_like(t), np.cos(angle), np.sin(angle)])
    # Normal equations: the columns are nearly orthogonal, and this is ~50x faster than lstsq's SVD.
    coefficients = np.linalg.solve(design.T @ design + 1e-9 * np.eye(design.shape[1]), design.T @ x)
    seasonal = design[:, 1:] @ coefficients[1:]
    total = float(((x - x.mean()) ** 2).sum())
    return seasonal, (float((seasonal**2).sum()) / total if total > 0 else 0.0)


def harmonic_power(t: np.ndarray, x: np.ndarray, period: float) -> float:
    """The periodogram summed over the same harmonics harmonic_fit uses: its explained variance, nearly,
    once the series holds a few cycles, at a fraction of the cost (no regression)."""
    harmonics = max(1, min(4, int(period // 2)))
    rotation = np.exp(-2j * np.pi * t / period)
    phase = np.ones_like(rotation)
    power = 0.0
    for _ in range(harmonics):
        phase = phase * rotation
        power += abs(complex(x @ phase)) ** 2
    return power


def find_period(t: np.ndarray, x: np.ndarray, refine: bool = True) -> tuple[float, float] | None:
    """(period, autocorrelation at it), or None when no cycle repeats at least 2.5 times clearly.

    ``refine=False`` stops at a parabola through the autocorrelation peak (a quick first estimate).
    """
    from scipy.signal import find_peaks

    n = x.size
    max_lag = int(n / 2.5)
    if max_lag < 4:
        return None
    acf = autocorrelation(x)[: max_lag + 1]
    peaks, _ = find_peaks(acf, prominence=0.1)
    floor = max(0.2, 3.0 / math.sqrt(n))  # white noise's autocorrelation stays within ~2/sqrt(n)
    candidates = [int(p) for p in peaks if p >= 2 and acf[p] >= floor]
    if not candidates:
        return None
    strongest = max(acf[p] for p in candidates)
    lag = min(p for p in candidates if acf[p] >= 0.85 * strongest)  # the period, not one of its multiples
    if not refine:
        below, here, above = acf[lag - 1], acf[lag], acf[min(lag + 1, max_lag)]
        curvature = below - 2 * here + above
        return (lag + 0.5 * (below - above) / curvature if curvature < 0 else float(lag)), float(acf[lag])
    # Sub-step refinement: integer lags cannot say 17.5; the periodogram of the cycle's harmonics can.
    centred = x - x.mean()
    half_width = max(1.5, 0.02 * lag)
    best = float(lag)
    # Coarse: the periodogram (cheap); fine: the harmonic regression itself, whose best period is also
    # the one with the least leftover (the periodogram's peak leans a little, by leakage from -f).
    stages = ((max(0.05, 0.002 * lag), half_width, lambda p: harmonic_power(t, centred, p)),
              (max(0.005, 0.0002 * lag), max(0.06, 0.0025 * lag), lambda p: harmonic_fit(t, x, p)[1]))
    for step, span, score_of in stages:
        centre, best_score = best, -1.0
        for period in np.arange(max(2.0, centre - span), min(n / 2.0, centre + span) + 1e-9, step):
            score = score_of(float(period))
            if score > best_score:
                best, best_score = float(period), score
    return best, float(acf[lag])


def binary_segmentation(x: np.ndarray, sd: float, min_size: int, t_threshold: float, min_jump: float) -> list[int]:
    """Indices where a new level starts (each is the first point of its segment), in order."""
    if sd <= 0:
        sd = 1e-12

    def best_split(start: int, end: int) -> tuple[int, float, float]:
        """The step with the largest t statistic in x[start:end], fitted with the segment's own line.

        For x = a + b t + jump * [t >= k]: jump = <x~, H_k> / |H~_k|^2 with x~ and H~_k the residuals
        of x and the step H_k after regressing on (1, t); all k at once from cumulative sums. Allowing
        the line matters: a rising series that drops back by a step has nearly equal means on both sides.
        """
        segment = x[start:end]
        m = segment.size
        if m < 2 * min_size:
            return -1, 0.0, 0.0
        u = np.arange(m, dtype=np.float64) - (m - 1) / 2
        spread = float((u**2).sum())
        residual = segment - segment.mean() - u * float((u * segment).sum()) / spread
        k = np.arange(min_size, m - min_size + 1)
        tail_residual = np.cumsum(residual[::-1])[::-1]  # tail_residual[k] = sum of residual[k:]
        tail_u = np.cumsum(u[::-1])[::-1]
        ones = (m - k).astype(np.float64)
        norm = ones - ones**2 / m - tail_u[k] ** 2 / spread
        norm = np.maximum(norm, 1e-12)
        jump = tail_residual[k] / norm
        statistic = np.abs(jump) * np.sqrt(norm) / sd
        i = int(statistic.argmax())
        return start + int(k[i]), float(statistic[i]), float(jump[i])

    changes: list[int] = []
    pending = [(0, x.size)]
    while pending:
        start, end = pending.pop()
        split, statistic, jump = best_split(start, end)
        if split < 0 or statistic < t_threshold or abs(jump) < min_jump * sd:
            continue
        changes.append(split)
        pending += [(start, split), (split, end)]
    changes.sort()
    # Binary segmentation places a change while others still sit in its segment; re-place each between its neighbours.
    for index in range(len(changes)):
        start = changes[index - 1] if index else 0
        end = changes[index + 1] if index + 1 < len(changes) else x.size
        split, _, _ = best_split(start, end)
        if split > 0:
            changes[index] = split
    return sorted(set(changes))


def is_sudden(x: np.ndarray, change: int, jump: float, width: int) -> bool:
    """Whether the level really jumps at ``change``, rather than a curving trend being cut into steps.

    A line is fitted (Theil-Sen) to the ``width`` points on each side, each carried to the change point:
    at a step they disagree by about the step, along a smooth curve they meet. Half the fitted step
    has to show up there.
    """
    from scipy.stats import theilslopes

    if change < 3 or x.size - change < 3:
        return True
    left = x[max(0, change - width) : change]
    right = x[change : change + width]
    at = change - 0.5
    left_fit = theilslopes(left, np.arange(change - left.size, change, dtype=np.float64))
    right_fit = theilslopes(right, np.arange(change, change + right.size, dtype=np.float64))
    local = (right_fit.intercept + right_fit.slope * at) - (left_fit.intercept + left_fit.slope * at)
    return local * np.sign(jump) >= 0.5 * abs(jump)


def fit_levels(t: np.ndarray, x: np.ndarray, changes: list[int], min_jump: float,
               width: int) -> tuple[float, list[int], np.ndarray]:
    """One slope and a step at each change, fitted jointly; steps smaller than ``min_jump``, or not
    sudden (see is_sudden), are dropped one by one, the smallest first.

    Fitting them together matters: with the slope held fixed at a value a step has biased, a staircase
    of small false steps fits the data as well as the one true step does.
    """
    changes = list(changes)
    while True:
        design = np.column_stack([np.ones_like(t), t, *[(t >= c).astype(np.float64) for c in changes]])
        coefficients, *_ = np.linalg.lstsq(design, x, rcond=None)
        jumps = coefficients[2:]
        weak = [i for i, (c, jump) in enumerate(zip(changes, jumps, strict=True))
                if abs(jump) < min_jump or not is_sudden(x, c, jump, width)]
        if not weak:
            return float(coefficients[1]), changes, design[:, 2:] @ jumps if changes else np.zeros_like(x)
        changes.pop(min(weak, key=lambda i: abs(jumps[i])))


@dataclass
class Decomposition:
    trend: np.ndarray  # line + level shifts
    seasonal: np.ndarray
    residual: np.ndarray
    slope: float
    intercept: float
    slope_interval: tuple[float, float]
    period: float | None
    period_acf: float | None
    spikes: list[int]
    spike_z: np.ndarray
    baseline: np.ndarray  # what a spike is compared with: its neighbours' level + seasonal
    changes: list[int]
    noise: float
    short_term_noise: float  # from first differences: what is left once slow wandering is ignored


def local_level(x: np.ndarray) -> np.ndarray:
    """What each point "should" be: the median of the 4 points before it or of the 4 after it, whichever is
    closer, each carried to the point along the local slope.

    The point itself stays out (in a 9-point window it *is* the median one time in nine, which shrinks
    the deviations' spread until ordinary noise looks like spikes); taking the closer side means the
    first point after a level shift, which agrees with its right-hand neighbours, is no spike; and the
    local slope (between the medians of the 8 points on either side) keeps a curving trend, whose
    neighbours lie 2.5 steps' rise away, from looking like a row of spikes.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    n, width = x.size, SPIKE_SIDE
    sides = np.full((2, n), np.nan)
    if n > width:
        medians = np.median(sliding_window_view(x, width), axis=1)  # medians[i] = median(x[i : i + width])
        sides[0, width:] = medians[: n - width]  # before: x[i - width : i], centred 2.5 steps back
        sides[1, : n - width] = medians[1:]  # after: x[i + 1 : i + 1 + width], 2.5 steps ahead
    wide = 2 * width
    if n > 2 * wide:
        far = np.median(sliding_window_view(x, wide), axis=1)
        slope = np.zeros(n)
        slope[wide : n - wide] = (far[wide + 1 : n - wide + 1] - far[: n - 2 * wide]) / (wide + 1)
        # Near the ends, the slope between the two 4-point groups on the side that exists (curves bend most there).
        head, tail = np.arange(wide), np.arange(n - wide, n)
        slope[head] = (medians[head + width + 1] - medians[head + 1]) / width
        slope[tail] = (medians[tail - width] - medians[tail - 2 * width]) / width
        reach = (width + 1) / 2
        sides[0] += reach * slope
        sides[1] -= reach * slope
    distance = np.abs(sides - x)
    closer = np.where(np.isnan(distance[0]) | (distance[1] < distance[0]), 1, 0)
    level = sides[closer, np.arange(n)]
    return np.where(np.isnan(level), x, level)


def decompose(y: np.ndarray, *, spike_threshold: float, shift_threshold: float, period: float | None = None) -> Decomposition:
    n = y.size
    t = np.arange(n, dtype=np.float64)
    min_size = max(5, n // 50)
    t_threshold = max(5.0, math.sqrt(2 * math.log(n)) + 2.0)  # far above the max of n noise-only t statistics
    slope, intercept, low, high = theil_sen(t, y)
    trend = intercept + slope * t
    # Below this, "noise" is rounding: a noise-free sine would otherwise turn its last digits into spikes, and
    # a constant series (std 0) its last bit.
    floor = max(1e-4 * float(y.std()), 64 * np.finfo(np.float64).eps * float(np.abs(y).max()))
    clean = y.copy()
    seasonal = np.zeros(n)
    found: tuple[float, float] | None = None
    changes: list[int] = []
    spikes = np.zeros(0, dtype=int)
    z = np.zeros(n)
    running = y.copy()
    for round_ in range(ROUNDS):
        last = round_ == ROUNDS - 1
        detrended = clean - trend
        if period is not None:
            found = (float(period), float("nan"))
        else:
            found = find_period(t, detrended)
        seasonal = np.zeros(n)
        if found is not None:
            seasonal, _ = harmonic_fit(t, detrended, found[0])
        deseasonalised = y - seasonal
        # Neighbours are compared along the current trend line: the median of the 4 points before a
        # point on a steep line lies 2.5 steps' rise below it, which is no spike.
        line = slope * t
        running = local_level(deseasonalised - line) + line
        deviation = deseasonalised - running
        # The noise from first differences (blind to trends and level shifts), scaled to what a point's
        # distance from a 4-point median has: var(x - median of 4) = (1 + 0.343) var(x) for Gaussian noise.
        # The deviations' own MAD would not do: taking the closer side squeezes their middle, not their tails.
        noise = max(robust_sd(np.diff(deseasonalised)) / math.sqrt(2), floor)
        z = deviation / (MEDIAN4_SPREAD * noise) if noise > 0 else np.sign(deviation) * np.where(deviation != 0, np.inf, 0.0)
        spikes = np.flatnonzero(np.abs(z) > spike_threshold)
        steady = deseasonalised.copy()
        steady[spikes] = running[spikes]
        clean = steady + seasonal
        noise = max(robust_sd(np.diff(steady)) / math.sqrt(2), floor)
        candidates = binary_segmentation(steady, noise, min_size, t_threshold, shift_threshold)
        slope, changes, offsets = fit_levels(t, steady, candidates, shift_threshold * noise, max(8, min_size))
        if last:  # the robust slope and its interval, once the level shifts are known
            slope, intercept, low, high = theil_sen(t, steady - offsets)
        else:
            intercept = float(np.median(steady - offsets - slope * t))
        trend = intercept + slope * t + offsets
    if found is not None and period is None:
        # A cycle too weak to stand out once trend and shifts are gone is not reported.
        residual = clean - trend - seasonal
        if 1.0 - residual.var() / max((seasonal + residual).var(), 1e-300) < 0.1:
            found, seasonal = None, np.zeros(n)
    residual = clean - trend - seasonal
    return Decomposition(
        trend=trend, seasonal=seasonal, residual=residual, slope=slope, intercept=intercept, slope_interval=(low, high),
        period=found[0] if found else None, period_acf=(found[1] if found and not math.isnan(found[1]) else None),
        spikes=[int(i) for i in spikes], spike_z=z, baseline=running + seasonal, changes=changes,
        noise=robust_sd(residual), short_term_noise=robust_sd(np.diff(residual)) / math.sqrt(2) if n > 2 else 0.0,
    )


# ------------------------------------------------------------------------------------------ description


def _strength(component: np.ndarray, residual: np.ndarray) -> float:
    total = (component + residual).var()
    return float(max(0.0, 1.0 - residual.var() / total)) if total > 0 else 0.0


def _number(value: float) -> float:
    """Rounded to 4 significant digits: a report, not a dump."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.4g}")


# Beyond these magnitudes squares and variances overflow or underflow; such a series is described at a
# power-of-two scale (exact in floating point) and its numbers scaled back.
_SAFE_MAGNITUDE = (2.0**-100, 2.0**100)
# Above this, differences between values (a range, a step, a deviation) may not fit in a float at all.
MAX_MAGNITUDE = 2.0**1000
# Report numbers measured in the series' own units (the rest are counts, ratios, positions or z-scores).
_VALUE_FIELDS = {
    None: ("mean", "min", "max"),
    "trend": ("slope_per_step", "change_over_series", "slope_per_time_unit", "slope_first_half", "slope_second_half"),
    "seasonality": ("amplitude",),
    "noise": ("sd", "short_term_sd"),
}
_ITEM_VALUE_FIELDS = {"spikes": ("value", "expected", "deviation"), "level_shifts": ("size", "level_before", "level_after")}


def _scale_exponent(y: np.ndarray) -> int:
    """0 for a series of ordinary magnitude, else the power of two that brings its largest value near 1."""
    peak = float(np.abs(y).max())
    if peak == 0.0 or _SAFE_MAGNITUDE[0] <= peak <= _SAFE_MAGNITUDE[1]:
        return 0
    return math.frexp(peak)[1]


def _scaled_back(report: dict[str, Any], d: Decomposition, exponent: int) -> tuple[dict[str, Any], Decomposition]:
    def back(value: float) -> float:
        return _number(math.ldexp(value, exponent))

    for section, keys in _VALUE_FIELDS.items():
        part = report if section is None else report[section]
        for key in keys:
            if key in part:
                part[key] = back(part[key])
    report["trend"]["slope_interval_95"] = [back(v) for v in report["trend"]["slope_interval_95"]]
    for section, keys in _ITEM_VALUE_FIELDS.items():
        for item in report[section]["items"]:
            for key in keys:
                item[key] = back(item[key])
    arrays = {name: np.ldexp(getattr(d, name), exponent) for name in ("trend", "seasonal", "residual", "baseline")}
    numbers = {name: math.ldexp(getattr(d, name), exponent) for name in ("slope", "intercept", "noise", "short_term_noise")}
    interval = (math.ldexp(d.slope_interval[0], exponent), math.ldexp(d.slope_interval[1], exponent))
    return report, dataclasses.replace(d, **arrays, **numbers, slope_interval=interval)


def describe_channel(y: np.ndarray, timestamps: np.ndarray | None, params: dict[str, Any],
                     time_unit: str | None = None) -> tuple[dict[str, Any], Decomposition]:
    exponent = _scale_exponent(y)
    if exponent == 0:
        return _describe_channel(y, timestamps, params, time_unit)
    report, d = _describe_channel(np.ldexp(y, -exponent), timestamps, params, time_unit)
    report, d = _scaled_back(report, d, exponent)
    report.update(min=_number(float(y.min())), max=_number(float(y.max())))  # as given, not via the scale
    return report, d


def _describe_channel(y: np.ndarray, timestamps: np.ndarray | None, params: dict[str, Any],
                      time_unit: str | None) -> tuple[dict[str, Any], Decomposition]:
    n = y.size
    d = decompose(y, spike_threshold=params["spike_threshold"], shift_threshold=params["shift_threshold"],
                  period=params["period"])
    t = np.arange(n, dtype=np.float64)
    line = d.intercept + d.slope * t
    level_free = line + d.residual  # the series without seasonality, spikes and level shifts
    total = float(((level_free - level_free.mean()) ** 2).sum())
    r_squared = 1.0 - float(((level_free - line) ** 2).sum()) / total if total > 0 else 0.0
    change = d.slope * (n - 1)
    significant = not (d.slope_interval[0] <= 0.0 <= d.slope_interval[1])
    direction = "flat"
    if significant and abs(change) >= max(d.noise, 1e-12):  # a rise smaller than the noise is not a trend
        direction = "up" if d.slope > 0 else "down"
    step = float(np.median(np.diff(timestamps))) if timestamps is not None and n > 1 else None

    dated = timestamps is not None and time_unit in SECONDS_UNITS
    clock = dated and has_clock_times(timestamps)

    def where(index: int) -> dict[str, Any]:
        place: dict[str, Any] = {"index": int(index)}
        if timestamps is not None:
            moment = float(timestamps[index])  # never rounded: epoch seconds need all their digits
            place["time"] = int(moment) if moment.is_integer() else moment
            if dated:  # what a reader is told; "time" stays the number, for programs
                place["date" if time_unit == TIME_UNIT_EPOCH else "clock"] = time_text(moment, time_unit, clock)
        return place

    shape = trend_shape(t, level_free, d.noise)
    trend = {"direction": direction, "slope_per_step": _number(d.slope), **shape,
             "slope_interval_95": [_number(d.slope_interval[0]), _number(d.slope_interval[1])],
             "change_over_series": _number(change), "r_squared": round(max(0.0, r_squared), 4),
             "strength": round(_strength(d.trend, d.residual), 4)}
    if step:
        trend["slope_per_time_unit"] = _number(d.slope / step)
    seasonality: dict[str, Any] = {"present": d.period is not None}
    if d.period is not None:
        cycle = d.seasonal[: int(math.ceil(d.period))] if n >= d.period else d.seasonal
        seasonality.update({
            "period_steps": round(d.period, 3), "strength": round(_strength(d.seasonal, d.residual), 4),
            "amplitude": _number((float(d.seasonal.max()) - float(d.seasonal.min())) / 2),
            "peak_phase_steps": int(np.argmax(cycle)),
            "autocorrelation": round(d.period_acf, 4) if d.period_acf is not None else None,
        })
        if step:
            seasonality["period_time"] = _number(d.period * step)
    spikes = [{**where(i), "value": _number(float(y[i])), "expected": _number(float(d.baseline[i])),
               "deviation": _number(float(y[i] - d.baseline[i])), "z": round(float(d.spike_z[i]), 2)} for i in d.spikes]
    shifts = []
    for c in d.changes:
        before, after = float(d.trend[c - 1]), float(d.trend[c])
        shifts.append({**where(c), "size": _number(after - before - d.slope), "level_before": _number(before),
                       "level_after": _number(after)})
    report: dict[str, Any] = {
        "length": n, "mean": _number(float(y.mean())), "min": _number(float(y.min())), "max": _number(float(y.max())),
        "trend": trend, "seasonality": seasonality,
        "noise": {"sd": _number(d.noise), "method": "1.4826 * MAD of the residual",
                  "short_term_sd": _number(d.short_term_noise), "wanders": bool(d.noise > 1.5 * max(d.short_term_noise, 1e-300))},
        "spikes": {"count": len(spikes), "threshold_z": params["spike_threshold"], "items": spikes[:MAX_LISTED]},
        "level_shifts": {"count": len(shifts), "items": shifts[:MAX_LISTED]},
        # Where the extremes fall ("when was the peak?", "which month was the priciest?"); the first of ties.
        "highest": where(int(np.argmax(y))), "lowest": where(int(np.argmin(y))),
    }
    if dated:
        report["span"] = {"from": time_text(float(timestamps[0]), time_unit, clock),
                          "to": time_text(float(timestamps[-1]), time_unit, clock)}
        if step:
            report["step"] = duration_text(step)
        if d.period is not None and step:
            seasonality["period"] = duration_text(d.period * step)
            if time_unit == TIME_UNIT_EPOCH:
                seasonality.update(calendar_peak(timestamps, d.seasonal, d.period, d.period * step))
    return report, d


DAY_S = 86_400.0
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def calendar_peak(timestamps: np.ndarray, seasonal: np.ndarray, period: float, period_s: float) -> dict[str, Any]:
    """Where a yearly, weekly or daily cycle peaks in calendar words ("which months sell the most?" is asked
    of monthly sales, not "7 steps into each cycle"): the month, weekday or hour most cycles peak at."""
    import datetime

    for low, high, key, name in ((300 * DAY_S, 430 * DAY_S, "peak_month", lambda d: MONTHS[d.month - 1]),
                                 (6.5 * DAY_S, 7.5 * DAY_S, "peak_weekday", lambda d: WEEKDAYS[d.weekday()]),
                                 (0.9 * DAY_S, 1.1 * DAY_S, "peak_hour", lambda d: f"{d.hour:02d}:00")):
        if not low <= period_s <= high:
            continue
        length, found = int(math.ceil(period)), []
        for start in range(0, len(seasonal) - length + 1, length):
            peak = start + int(np.argmax(seasonal[start:start + length]))
            found.append(name(datetime.datetime.fromtimestamp(float(timestamps[peak]), datetime.timezone.utc)))
        if found:
            return {key: max(set(found), key=found.count)}
    return {}


def trend_shape(t: np.ndarray, x: np.ndarray, noise: float) -> dict[str, Any]:
    """Straight, accelerating, decelerating or reversing: the Theil-Sen slopes of the two halves compared.

    A bend counts when the halves' 95 % intervals do not overlap and the slopes differ by enough to
    move the series by over three times its noise across half its length.
    """
    half = t.size // 2
    if half < 4:
        return {"shape": "straight"}
    first = theil_sen(t[:half], x[:half])
    second = theil_sen(t[half:], x[half:])
    apart = first[3] < second[2] or second[3] < first[2]
    shape = "straight"
    if apart and abs(second[0] - first[0]) * half > 3 * max(noise, 1e-12):
        if first[0] * second[0] < 0 and min(abs(first[0]), abs(second[0])) * half > noise:
            shape = "reversing"
        else:
            shape = "accelerating" if abs(second[0]) > abs(first[0]) else "decelerating"
    return {"shape": shape, "slope_first_half": _number(first[0]), "slope_second_half": _number(second[0])}


def _place_text(item: dict[str, Any]) -> str:
    if "date" in item or "clock" in item:
        return str(item.get("date") or item["clock"])
    return f"t={item['time']:.12g} (index {item['index']})" if "time" in item else f"index {item['index']}"


def channel_text(name: str, report: dict[str, Any], time_unit: bool) -> str:
    trend, seasonality = report["trend"], report["seasonality"]
    parts = []
    if trend["direction"] == "flat":
        parts.append(f"no clear trend (slope {trend['slope_per_step']:g} per step, R\u00b2 {trend['r_squared']:.2f})")
    else:
        word = "an upward" if trend["direction"] == "up" else "a downward"
        parts.append(f"{word} trend of {trend['slope_per_step']:+g} per step ({trend['change_over_series']:+g} over the series, "
                     f"R\u00b2 {trend['r_squared']:.2f})")
    if trend["shape"] != "straight":
        parts[-1] += (f", {trend['shape']} (slope {trend['slope_first_half']:+g} per step in the first half, "
                      f"{trend['slope_second_half']:+g} in the second)")
    if seasonality["present"]:
        period = f"{seasonality['period_steps']:g} steps"
        if "period" in seasonality:
            period += f" ({seasonality['period']})"
        elif time_unit:
            period += f" ({seasonality['period_time']:g} time units)"
        peak = (f"highest in {seasonality['peak_month']} each year" if "peak_month" in seasonality else
                f"highest on {seasonality['peak_weekday']}s" if "peak_weekday" in seasonality else
                f"highest around {seasonality['peak_hour']} each day" if "peak_hour" in seasonality else
                f"peaking {seasonality['peak_phase_steps']} steps into each cycle")
        parts.append(f"a repeating cycle every {period}, amplitude \u00b1{seasonality['amplitude']:g}, strength "
                     f"{seasonality['strength']:.2f}, {peak}")
    else:
        parts.append("no seasonality")
    noise = report["noise"]
    parts.append(f"noise of about {noise['sd']:g} (robust standard deviation)" + (
        f", wandering slowly around the trend (point-to-point noise {noise['short_term_sd']:g})" if noise["wanders"] else ""))
    spikes = report["spikes"]
    if spikes["count"]:
        listed = ", ".join(f"{_place_text(s)} ({s['value']:g}, {s['deviation']:+g} from expected)" for s in spikes["items"][:8])
        more = f" and {spikes['count'] - 8} more" if spikes["count"] > 8 else ""
        parts.append(f"{spikes['count']} spike{'s' if spikes['count'] > 1 else ''} at {listed}{more}")
    else:
        parts.append("no spikes")
    shifts = report["level_shifts"]
    if shifts["count"]:
        listed = ", ".join(f"{_place_text(s)} ({s['size']:+g})" for s in shifts["items"][:8])
        more = f" and {shifts['count'] - 8} more" if shifts["count"] > 8 else ""
        parts.append(f"{shifts['count']} level shift{'s' if shifts['count'] > 1 else ''} at {listed}{more}")
    else:
        parts.append("no level shifts")
    if "span" in report:
        every = ""
        if "step" in report:  # '1 day' -> 'one per day'; '2.5 hours' -> 'one every 2.5 hours'
            every = f", one per {report['step'][2:]}" if report["step"].startswith("1 ") else f", one every {report['step']}"
        head = (f"{name} ({report['length']} points{every}, from {report['span']['from']} to {report['span']['to']}; "
                f"lowest {report['min']:g} at {_place_text(report['lowest'])}, "
                f"highest {report['max']:g} at {_place_text(report['highest'])})")
    else:
        head = f"{name} ({report['length']} points, {report['min']:g} to {report['max']:g})"
    return f"{head}: " + "; ".join(parts) + "."


def plot(series: TimeSeries, names: list[str], decompositions: list[Decomposition], max_panels: int = 8):
    """The series with its trend (dashed), spikes (red dots) and level shifts (orange lines), one panel per channel."""
    from PIL import Image

    plt = pyplot("the time-series describer's plot")

    x = time_axis(series)
    values = series.values.reshape(series.length, -1)
    panels = min(len(names), max_panels)
    figure, axes = plt.subplots(panels, 1, figsize=(9, 2.4 * panels + 0.4), sharex=True, squeeze=False)
    for row in range(panels):
        axis, d = axes[row][0], decompositions[row]
        axis.plot(x, values[:, row], linewidth=1, color="#1f77b4", label=names[row])
        axis.plot(x, d.trend, linewidth=1.2, linestyle="--", color="#333333", label="trend")
        if d.spikes:
            axis.scatter(x[d.spikes], values[d.spikes, row], s=28, color="#d62728", zorder=3, label="spikes")
        for i, c in enumerate(d.changes):
            axis.axvline(x[c - 1] + (x[c] - x[c - 1]) / 2, color="#ff7f0e", linestyle=":", linewidth=1.5,
                         label="level shift" if i == 0 else None)
        axis.set_ylabel(names[row])
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    axes[-1][0].set_xlabel("time" if series.timestamps is not None else "index")
    more = f" (first {panels} of {len(names)} channels)" if len(names) > panels else ""
    axes[0][0].set_title(f"{series.length} points, {series.channels} channel(s){more}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


class TimeSeriesDescription(WeightlessTool):
    name = "time-series-description"
    task = "time-series-description"
    description = (
        "Describe a time series (one or more channels): trend direction and slope, repeating cycles and their "
        "period, noise level, spikes and sudden level shifts with their positions, as a paragraph, a JSON "
        "report with every number, and an annotated plot. Statistical; needs no model weights."
    )
    inputs = {"series": Input(ArtifactKind.TIME_SERIES, "the series to describe")}
    outputs = {
        "text": Output(ArtifactKind.TEXT, "a readable paragraph per channel, with positions"),
        "report": Output(ArtifactKind.JSON, "all numbers and positions, per channel"),
        "plot": Output(ArtifactKind.IMAGE, "the series with trend, spikes and level shifts marked"),
    }
    params = {
        "spike_threshold": Param(float, 5.0, "robust z-score (vs. the running median) above which a point is a spike",
                                 minimum=2.0, maximum=50.0),
        "shift_threshold": Param(float, 1.5, "smallest level shift reported, in noise standard deviations",
                                 minimum=0.25, maximum=50.0),
        "period": Param(float, None,
                        "the cycle length in steps if known (e.g. 24 for hourly data with a daily cycle); empty finds it",
                        minimum=2.0, maximum=MAX_POINTS / 2, nullable=True),
    }
    default_model = METHOD
    requires = ("matplotlib",)  # the plot output (the `plot` extra)

    def build_method(self) -> Any:
        return _Method()

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        series: TimeSeries = inputs["series"]
        peak = float(np.abs(series.values).max())
        if peak > MAX_MAGNITUDE:
            index = np.unravel_index(int(np.abs(series.values).argmax()), series.values.shape)
            where = int(index[0]) if len(index) == 1 else tuple(int(i) for i in index)
            raise InvalidInputError(f"{self.name}: input 'series' holds {float(series.values[index]):g} (at index {where}); "
                                    f"values must be below {MAX_MAGNITUDE:.3g} in magnitude to be compared (rescale the series)")

    def run(self, method: _Method, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        series: TimeSeries = inputs["series"]
        if series.length < MIN_POINTS:
            raise InvalidInputError(
                f"{self.name}: input 'series' has {series.length} points; describing one needs at least {MIN_POINTS}")
        if series.length > MAX_POINTS:
            raise InvalidInputError(f"{self.name}: input 'series' has {series.length:,} points, "
                                    f"over the limit of {MAX_POINTS:,}; resample it first")
        if series.channels > MAX_CHANNELS:
            raise InvalidInputError(
                f"{self.name}: input 'series' has {series.channels} channels, over the limit of {MAX_CHANNELS}")
        if params["period"] is not None and params["period"] > series.length / 2:
            raise InvalidInputError(f"{self.name}: param 'period' ({params['period']:g}) must be at most half "
                                    f"the series length ({series.length})")
        values = series.values.reshape(series.length, -1)
        names = series.channel_names or (
            [f"channel {i + 1}" for i in range(values.shape[1])] if values.shape[1] > 1 else ["series"])
        reports, decompositions, paragraphs = [], [], []
        for column in range(values.shape[1]):
            report, decomposition = describe_channel(values[:, column], series.timestamps, params, series.time_unit)
            reports.append({"channel": names[column], **report})
            decompositions.append(decomposition)
            paragraphs.append(channel_text(names[column], report, series.timestamps is not None))
            self.report_progress(column + 1, values.shape[1], "describing")
        metadata = {"method": method.name, "channels": len(names), "length": series.length,
                    "params": {k: v for k, v in params.items()}}
        return {
            "text": OutputValue("\n".join(paragraphs), metadata),
            "report": OutputValue({"channels": reports, "timestamps": series.timestamps is not None}, metadata),
            "plot": OutputValue(plot(series, names, decompositions), metadata),
        }
