"""Spoken sentences for speech -> text alignment, synthesised offline by the packaged Piper voice.

Each sentence is spoken once, resampled to Whisper's 16 kHz with soxr and kept as a 16-bit wav in a
cache folder named by a hash of the voice, the speaking rate and the text, so the next call with
the same sentences reads files instead of loading the voice. Piper's synthesis is not bit-exact from
run to run (VITS samples noise), which is one more reason to synthesise once and keep the file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config import current_settings
from orchestrator.errors import InvalidInputError
from orchestrator.storage.atomic_files import partial_path
from orchestrator.storage.media import AudioClip

from . import check_count

__all__ = ["SpokenSentence", "default_sentences", "spoken_sentences", "SPEECH_RATE", "DEFAULT_VOICE"]

SPEECH_RATE = 16_000  # what Whisper-style encoders take
DEFAULT_VOICE = "en_US-joe-medium"  # the voice the text-to-speech tool finds packaged
MAX_SENTENCE_CHARACTERS = 400

_PEOPLE = ("The old man", "My sister", "A small child", "The teacher", "Our neighbour", "The pilot", "A young girl",
           "The farmer", "Her brother", "The doctor", "The baker", "My friend")
_DEEDS = ("opened the red door", "painted the kitchen wall", "found a silver key", "read the morning paper",
          "carried two heavy boxes", "fixed the broken chair", "planted tomatoes in the garden", "called the office",
          "baked fresh bread", "washed the blue car", "lost an umbrella", "fed the hungry cat")
_WHEN = ("", " yesterday", " before lunch", " after the storm", " on Sunday", " this morning")
_THINGS = ("keys", "book", "coffee", "ticket", "phone", "letter", "map", "blanket", "camera", "bicycle")
_WEATHER = ("cold", "sunny", "windy", "cloudy", "warm", "rainy", "foggy", "dry")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")


def default_sentences(count: int = 300) -> list[str]:
    """``count`` short, varied English sentences from templates (statements, questions, numbers, weather), fixed order."""
    check_count(count, "count")
    families = [
        [f"{who} {deed}{when}." for who, deed, when in itertools.product(_PEOPLE, _DEEDS, _WHEN)],
        [f"Where did you put the {thing}?" for thing in _THINGS]
        + [f"Have you seen my {thing} anywhere?" for thing in _THINGS]
        + [f"Please bring the {thing} to the kitchen." for thing in _THINGS],
        [f"The train leaves at {n} o'clock." for n in _NUMBERS]
        + [f"We need {n} more chairs for the meeting." for n in _NUMBERS]
        + [f"She walked {n} miles along the river." for n in _NUMBERS],
        [f"It will be {a} and {b} tomorrow." for a, b in itertools.permutations(_WEATHER, 2)],
    ]
    rng = np.random.default_rng(20_241_101)  # a fixed shuffle: the list is part of the dataset's definition
    for family in families:
        rng.shuffle(family)
    # Interleave the families so that any prefix of the list mixes every kind of sentence.
    mixed = [s for group in itertools.zip_longest(*families) for s in group if s is not None]
    if count > len(mixed):
        raise InvalidInputError(f"default_sentences: at most {len(mixed)} sentences are defined, asked for {count}")
    return mixed[:count]


@dataclass
class SpokenSentence:
    path: Path          # 16 kHz mono 16-bit wav
    transcript: str
    duration_s: float

    def audio(self) -> AudioClip:
        import soundfile

        samples, rate = soundfile.read(str(self.path), dtype="float32", always_2d=False)
        return AudioClip(samples, rate)


def _check_sentences(sentences: list[str]) -> list[str]:
    if not isinstance(sentences, (list, tuple)) or not sentences:
        raise InvalidInputError("spoken sentences: give a non-empty list of sentences")
    checked = []
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise InvalidInputError(f"spoken sentences: sentence {index} is empty or not text ({sentence!r})")
        if len(sentence) > MAX_SENTENCE_CHARACTERS:
            raise InvalidInputError(
                f"spoken sentences: sentence {index} has {len(sentence)} characters, over {MAX_SENTENCE_CHARACTERS}")
        checked.append(" ".join(sentence.split()))
    return checked


def _cached_duration(path: Path) -> float | None:
    """The duration of a finished cache file; None if absent or unreadable (then it is made again)."""
    if not path.is_file():
        return None
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:  # a truncated or foreign file
        return None
    return info.frames / info.samplerate if info.samplerate == SPEECH_RATE and info.frames > 0 else None


def spoken_sentences(n: int, seed: int, out_dir: str | os.PathLike[str] | None = None, *,
                     sentences: list[str] | None = None, voice: str = DEFAULT_VOICE, speed: float = 1.0,
                     progress: bool = True) -> list[SpokenSentence]:
    """``n`` sentences (drawn without repetition by ``seed`` from ``sentences`` or the default list), spoken.

    Wavs are kept in ``out_dir`` (default ``<anymoda home>/native-data/speech/<voice>``); sentences
    already there are not synthesised again.
    """
    from tqdm.auto import tqdm

    check_count(n)
    pool = _check_sentences(sentences) if sentences is not None else default_sentences()
    if n > len(pool):
        raise InvalidInputError(f"spoken sentences: asked for {n} but only {len(pool)} distinct sentences are given")
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        raise InvalidInputError(f"spoken sentences: speed must be between 0.25 and 4, got {speed!r}")
    folder = Path(out_dir).expanduser() if out_dir is not None else current_settings().home / "native-data" / "speech" / voice
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:n]]

    speaker = None
    results = []
    for text in tqdm(chosen, desc="speaking sentences", unit="sentence", disable=not progress):
        name = hashlib.sha256(f"{voice}\n{speed!r}\n{text}".encode()).hexdigest()[:24]
        path = folder / f"{name}.wav"
        duration = _cached_duration(path)
        if duration is None:
            if speaker is None:  # the built-in text-to-speech tool: loads the voice from the model pool once
                from orchestrator.tooling.registry import builtin_tool

                speaker = builtin_tool("text-to-speech", required=True)(voice)
            duration = _synthesise(speaker, text, speed, path)
        results.append(SpokenSentence(path, text, duration))
    return results


def _synthesise(speaker, text: str, speed: float, path: Path) -> float:
    import soundfile

    clip = speaker(text=text, speed=speed)["audio"]
    samples = clip.for_model(SPEECH_RATE)  # mono, soxr-resampled from the voice's own rate
    partial = partial_path(path)
    try:
        soundfile.write(str(partial), np.clip(samples, -1.0, 1.0), SPEECH_RATE, subtype="PCM_16", format="WAV")
        os.replace(partial, path)  # atomic: a half-written wav never looks finished
    finally:
        partial.unlink(missing_ok=True)
    return samples.shape[0] / SPEECH_RATE
