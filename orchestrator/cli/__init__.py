"""The ``anymoda`` command line: ``main`` parses the arguments; each command family has its own module."""

from .commands import main

__all__ = ["main"]
