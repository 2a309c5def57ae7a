"""What an attached file is, as the tool selector needs to know it: a page of text or a photo, speech or other sound.

The selector reads the request's words only, so "which restaurant is this from?" over a receipt went to
image captioning and "what time is the meeting?" over a voicemail to voice activity detection. Looking
at the file settles it: a picture that is mostly lines of text is a document (its questions go to
document QA), a recording that is mostly voice is speech (its questions go to speech recognition).

The probe uses the built-in OCR and voice activity tools (reached through the registry) when they can run
here; a kind it cannot look at, or a failure, gives no trait (the selection then goes by the words alone, as
before).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import AnymodaError
from ..storage.artifacts import Artifact, ArtifactKind
from ..tooling.registry import builtin_tool

DOCUMENT, PHOTO, SPEECH, SOUND = "document", "photo", "speech", "sound"
# A page of text has many lines of words; a photo with a shop sign or a caption has one or two.
MIN_DOCUMENT_LINES = 4
MIN_DOCUMENT_CHARACTERS = 40
# A voicemail is voice most of the time; rain with a word in it is not.
MIN_SPEECH_FRACTION = 0.3

TraitProbe = Callable[[Artifact], frozenset[str]]


def document_traits(text: str) -> frozenset[str]:
    """DOCUMENT for an OCR text of several lines of words, else PHOTO."""
    lines = [line for line in text.splitlines() if sum(c.isalpha() for c in line) >= 2]
    characters = sum(len(line) for line in lines)
    return frozenset({DOCUMENT if len(lines) >= MIN_DOCUMENT_LINES and characters >= MIN_DOCUMENT_CHARACTERS else PHOTO})


def speech_traits(segments: list[dict[str, float]], duration: float) -> frozenset[str]:
    """SPEECH when voice covers enough of the recording, else SOUND."""
    voiced = sum(max(0.0, float(s["end"]) - float(s["start"])) for s in segments)
    return frozenset({SPEECH if duration > 0 and voiced / duration >= MIN_SPEECH_FRACTION else SOUND})


def attachment_traits(settings: Any, store: Any, pool: Any = None) -> TraitProbe:
    """A probe from an attached artifact to its traits, with the built-in OCR and voice activity tools as configured.
    Results are kept per artifact id: a re-plan or a later turn does not look again."""
    ocr_class, vad_class = builtin_tool("ocr"), builtin_tool("voice-activity-detection")
    ocr = ocr_class(settings=settings, pool=pool) if ocr_class is not None else None
    vad = vad_class(settings=settings, pool=pool) if vad_class is not None else None
    seen: dict[str, frozenset[str]] = {}

    def probe(artifact: Artifact) -> frozenset[str]:
        if artifact.id in seen:
            return seen[artifact.id]
        traits: frozenset[str] = frozenset()
        try:
            if artifact.kind is ArtifactKind.IMAGE and ocr is not None and ocr.available():
                traits = document_traits(ocr(image=store.decode(artifact))["text"])
            elif artifact.kind is ArtifactKind.AUDIO and vad is not None and vad.available():
                clip = store.decode(artifact)
                traits = speech_traits(vad(audio=clip)["segments"], clip.duration_s)
        except AnymodaError:
            traits = frozenset()  # a file a tool cannot read is the plan's problem, reported when it runs
        seen[artifact.id] = traits
        return traits

    return probe
