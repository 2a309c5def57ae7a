"""Media that arrives over HTTP: base64 and data URLs decoded with bounds, then validated exactly as the
CLI validates a file (:meth:`~orchestrator.store.ArtifactStore.ingest_file`'s rules) before anything is
stored. Several parts of one request are all checked before the first is stored, so a request refused
for its third image leaves nothing behind."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..storage import codecs
from ..storage.artifacts import Artifact, ArtifactKind
from ..storage.codecs import EXTENSION_KINDS, MediaLimits
from ..errors import InvalidInputError, shown
from ..storage.store import ArtifactStore, extension_for

MEDIA_KINDS = (ArtifactKind.IMAGE, ArtifactKind.AUDIO, ArtifactKind.VIDEO)
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.ASCII)
_BASE64 = re.compile(rb"^[A-Za-z0-9+/_-]*={0,2}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


class PayloadTooLarge(InvalidInputError):
    """Decoded media over the caller's upload limit (answered 413, not 400)."""


@dataclass(frozen=True)
class MediaPart:
    """One validated piece of media, not yet stored."""

    data: bytes
    kind: ArtifactKind
    filename: str


def safe_filename(name: object, fallback: str) -> str:
    """A client's file name reduced to a harmless label: no folders, no control or odd characters."""
    text = PurePosixPath(str(name or "").replace("\\", "/")).name if name else ""
    text = _UNSAFE_NAME.sub("_", text).strip(" .")[:100]
    return text or fallback


def decode_base64(text: object, what: str, max_bytes: int) -> bytes:
    if not isinstance(text, str) or not text:
        raise InvalidInputError(f"{what} must be a non-empty base64 string")
    raw = "".join(text.split()).encode("ascii", "replace")
    if (len(raw) // 4) * 3 > max_bytes + 3:  # refused before decoding: the decoded size is known from the length
        raise PayloadTooLarge(f"{what} is about {(len(raw) // 4) * 3:,} bytes decoded, over the upload limit of {max_bytes:,}")
    if not _BASE64.fullmatch(raw):
        raise InvalidInputError(f"{what} is not valid base64 (it has characters outside the base64 alphabet)")
    try:
        if b"-" in raw or b"_" in raw:
            data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        else:
            data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{what} is not valid base64 ({exc})") from None
    if not data:
        raise InvalidInputError(f"{what} is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(data):,} bytes decoded, over the upload limit of {max_bytes:,}")
    return data


def decode_data_url(url: str, what: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes and declared mime type of a ``data:`` URL (base64 only: media is binary)."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidInputError(f"{what} is not a data URL (data:<mime>;base64,<data>)")
    if not match.group("b64"):
        raise InvalidInputError(f"{what}: only base64 data URLs are accepted")
    return decode_base64(url[match.end():], what, max_bytes), match.group("mime")


def kind_of_mime(mime: str | None) -> ArtifactKind | None:
    """The media kind a client declared (image/png -> image); None when it declared nothing specific."""
    if not mime:
        return None
    top = mime.split(";", 1)[0].strip().lower()
    for kind in MEDIA_KINDS:
        if top.startswith(kind.value + "/"):
            return kind
    if top in ("text/csv",):
        return ArtifactKind.TIME_SERIES
    if top in ("application/json",):
        return ArtifactKind.JSON
    if top.startswith("text/plain"):
        return ArtifactKind.TEXT
    return None


def check_media(data: bytes, filename: str, declared: ArtifactKind | None, limits: MediaLimits) -> MediaPart:
    """The CLI's rules for a user's file (content decides; an extension or declared kind that disagrees
    with a media file's content is refused), then the full codec inspection, all without storing."""
    if not data:
        raise InvalidInputError(f"input file {filename!r} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidInputError(f"input file {filename!r} is {len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    sniffed, _ = codecs.sniff(data)
    suffix = PurePosixPath(filename).suffix.lower()
    claimed = EXTENSION_KINDS.get(suffix)
    if claimed in MEDIA_KINDS and sniffed != claimed:
        raise InvalidInputError(f"input file {filename!r} has the extension {suffix} ({claimed.value}) but its content is "
                                f"{codecs.describe_content(data)}")
    if declared is not None and declared in MEDIA_KINDS and sniffed != declared:
        raise InvalidInputError(f"input file {filename!r} was sent as {declared.value} but its content is "
                                f"{codecs.describe_content(data)}")
    chosen = declared or claimed or sniffed
    if chosen is None:
        raise InvalidInputError(f"cannot tell what kind of input {filename!r} is ({codecs.describe_content(data)})")
    codecs.inspect(chosen, data, limits)  # decompression bombs, corrupt media, over-long audio: refused here
    if not PurePosixPath(filename).suffix:
        filename += extension_for(codecs.sniff(data)[1] or "")
    return MediaPart(data, chosen, filename)


def store_parts(store: ArtifactStore, parts: list[MediaPart], session: str) -> list[Artifact]:
    return [store.put(p.kind, p.data, metadata={"name": p.filename}, session=session) for p in parts]


def check_url_host(url: str, allowed_hosts: frozenset[str], what: str) -> None:
    """Refuse a URL whose host the operator has not allowed (all of them, unless configured)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInputError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError(f"{what}: only data: URLs, file ids and allowed http(s) URLs are accepted, "
                                f"not {shown(parts.scheme + ':')}")
    if not allowed_hosts:
        raise InvalidInputError(f"{what}: this server does not fetch URLs (send the media as a data: URL or upload it "
                                "to /v1/files)")
    if (parts.hostname or "").lower() not in allowed_hosts:
        raise InvalidInputError(f"{what}: the host {shown(parts.hostname or '')} is not among the hosts this server fetches from")


def fetch_url(url: str, allowed_hosts: frozenset[str], what: str, max_bytes: int, timeout: float = 20.0) -> tuple[bytes, str | None]:
    """GET an allowed http(s) URL, refusing redirects (they could lead to a host that is not allowed)
    and stopping at ``max_bytes``."""
    import urllib.request

    check_url_host(url, allowed_hosts, what)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            raise InvalidInputError(f"{what}: the server answered with a redirect, which is not followed")

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "anymoda"}), timeout=timeout) as response:
            data = response.read(max_bytes + 1)
            mime = response.headers.get_content_type()
    except InvalidInputError:
        raise
    except Exception as exc:  # DNS, refused, TLS, HTTP error: all the client's URL
        raise InvalidInputError(f"{what}: fetching it failed ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} is over the upload limit of {max_bytes:,} bytes")
    return data, mime
