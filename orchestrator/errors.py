"""The exceptions anymoda raises on purpose.

Every error caused by something from outside (a file, a URL, a plan, a request) is an
``InvalidInputError`` whose message names the offending thing, so that the CLI, the HTTP server and
the planner's repair loop can show it to a person or an LLM as it is.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any


class AnymodaError(Exception):
    """Base class of every deliberate anymoda error."""


class InvalidInputError(AnymodaError, ValueError):
    """Input from outside was rejected; the message says what and why."""


class ArtifactNotFoundError(AnymodaError, LookupError):
    """No artifact with that id is visible to the caller."""


class ToolNotFoundError(AnymodaError, LookupError):
    """No tool of that name is registered."""


class ToolUnavailableError(AnymodaError):
    """The tool is registered but cannot run on this machine (missing runtime or weights)."""


class ModelNotAvailableError(ToolUnavailableError):
    """The model's weights are found nowhere we may look; the message says how to get them."""


class MissingExtraError(ToolUnavailableError):
    """An optional part needs a package of an extra that is not installed (``plotting needs matplotlib: pip install
    'anymoda[plot]'``); see :mod:`orchestrator.extras`. A tool that meets one cannot run here."""


class MemoryBudgetError(AnymodaError):
    """A model cannot be loaded without exceeding the model pool's memory budget."""


class ToolExecutionError(AnymodaError):
    """A tool failed while running on valid input."""


class ConfigError(AnymodaError, ValueError):
    """A setting in the config file or the environment is invalid."""


class TransientError(AnymodaError):
    """A failure worth retrying (a dropped connection, a busy resource); the executor retries with backoff."""


# A value from outside quoted back in an error message: bounded, whatever its size.
MAX_SHOWN_CHARS = 60
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 2, 4, 4, 3
_SHOWN.maxstring, _SHOWN.maxother = MAX_SHOWN_CHARS, MAX_SHOWN_CHARS


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``value`` quoted for a message, at most about ``limit`` characters: a long text is cut with an
    ellipsis and its length, a big list or mapping shows its first items (reprlib never builds the
    whole repr, so a huge value costs nothing)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = _SHOWN.repr(value)
    return text if len(text) <= limit + 20 else f"{text[:limit]}… ({type(value).__name__})"


def shown_names(names: Iterable[Any], most: int = 8, limit: int = 60) -> str:
    """Names from outside (keys, tool names) listed for a message: the first ``most``, each quoted within
    ``limit`` characters, then how many more there were."""
    names = list(names)
    listed = ", ".join(shown(name, limit) for name in names[:most])
    return listed + (f" and {len(names) - most} more" if len(names) > most else "")


def shown_path(path: Any, limit: int = 120) -> str:
    """A path quoted for a message: whole up to ``limit`` characters, else its end (the file's name is the part
    a person recognises) after an ellipsis, with the full length."""
    text = str(path)
    if len(text) <= limit:
        return repr(text)
    return f"{'…' + text[-(limit - 1):]!r} ({len(text):,} characters)"
