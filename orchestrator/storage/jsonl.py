"""Reading JSON Lines files (planner cases, predictions, demos) with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def read_json_lines(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, 'file:line', parsed value) for every non-blank line of a JSONL file."""
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield lineno, where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
