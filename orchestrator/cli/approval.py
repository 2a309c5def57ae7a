"""Asking the person at the terminal whether tasks held for approval may run."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape


def ask_approval(waiting: list[dict[str, Any]], console: Console) -> bool:
    """Show each task waiting for approval and ask once for all of them; without a terminal the answer is no."""
    for task in waiting:
        console.print(f"[magenta]approval needed:[/] {escape(task['id'])} {escape(task['tool'])} "
                      f"{escape(json.dumps(task.get('args', {}), ensure_ascii=False)[:200])}")
    if not sys.stdin.isatty():
        return False
    answer = console.input("run these? [y/N] ").strip().lower()
    return answer in ("y", "yes")
