"""What an artifact is: a kind, a record, and the id format.

An artifact is an immutable piece of content (a photo, a sound, a transcript, a set of boxes) that
lives in the :class:`~orchestrator.storage.store.ArtifactStore`. Everything else in the system (plans, run
state, checkpoints, session history) refers to artifacts by id only, never by their bytes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import InvalidInputError, shown


class ArtifactKind(str, Enum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    TIME_SERIES = "time_series"
    DETECTIONS = "detections"  # boxes + labels + scores, optionally tied to an image
    MASKS = "masks"  # an instance label map: 0 is background, i > 0 is labels[i - 1]
    JSON = "json"

    @classmethod
    def parse(cls, value: str | ArtifactKind) -> ArtifactKind:
        if isinstance(value, ArtifactKind):
            return value
        try:
            return cls(str(value).strip().lower().replace("-", "_"))
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise InvalidInputError(f"unknown artifact kind {shown(value)}; known kinds: {known}") from None


# Ids carry their kind so that a person or an LLM reading a plan can tell an image from a sound.
# The random part is 16 hex digits; the whole id is checked against this pattern before it is ever
# used to look anything up, so an id can never name a path.
_ID_PATTERN = re.compile(r"^(text|image|audio|video|time_series|detections|masks|json)-[0-9a-f]{16}$")


def new_artifact_id(kind: ArtifactKind) -> str:
    return f"{kind.value}-{secrets.token_hex(8)}"


def is_artifact_id(value: object) -> bool:
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None  # '$' alone would allow a trailing newline


def check_artifact_id(value: object) -> str:
    if not is_artifact_id(value):
        raise InvalidInputError(
            f"{shown(value)} is not a valid artifact id (expected '<kind>-<16 hex digits>', e.g. 'image-0123456789abcdef')"
        )
    return value  # type: ignore[return-value]


def kind_of_id(artifact_id: str) -> ArtifactKind:
    return ArtifactKind(check_artifact_id(artifact_id).rsplit("-", 1)[0])


@dataclass(frozen=True)
class Artifact:
    """The index record of a stored artifact (its content stays on disk until asked for)."""

    id: str
    kind: ArtifactKind
    mime: str
    size: int
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    session: str | None = None
    task: str | None = None
    parents: tuple[str, ...] = ()
    created_at: float = 0.0

    def describe(self) -> str:
        """A one-line summary fit for a prompt or a table."""
        bits = [f"{self.id} ({self.kind.value}, {self.mime}, {self.size} bytes)"]
        for key in ("name", "width", "height", "duration_s", "sample_rate", "length", "channels"):
            if key in self.metadata:
                bits.append(f"{key}={self.metadata[key]}")
        return " ".join(bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "mime": self.mime,
            "size": self.size,
            "sha256": self.sha256,
            "metadata": self.metadata,
            "session": self.session,
            "task": self.task,
            "parents": list(self.parents),
            "created_at": self.created_at,
        }
