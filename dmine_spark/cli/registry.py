"""Where command groups register their commands: a name, its help, its arguments and what it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command", "COMMANDS", "command"]


@dataclass(frozen=True)
class Command:
    """One ``dmine`` subcommand."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS: dict[str, Command] = {}
"""Every registered command by name, in registration order (the order ``dmine --help`` lists them)."""


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None], *, description: str | None = None
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as the ``dmine <name>`` command.

    ``configure`` adds the command's arguments to its parser; the function
    runs the command and returns its exit status.

    Raises
    ------
    ValueError
        When ``name`` is registered twice.
    """

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"dmine command {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, configure, run, description)
        return run

    return register
