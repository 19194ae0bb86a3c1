"""The ``dmine`` command line: command groups register their commands; :func:`main` parses and runs one.

Groups: ``pipeline`` (``run`` and one command per stage), ``deploy``
(``score``, ``stream``, ``monitor``), ``catalog`` (``sql``, ``tables``,
``serve-sql``), ``cluster`` (``profiles``, ``databricks-job``, ``jars``) and
``tools`` (``bench``, ``datagen``). A user mistake prints one line,
``dmine: error: ...``, and exits with status 2; anything else prints one line
with a hint and exits with status 1. ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence

from dmine_spark import __version__
from dmine_spark.cli import catalog, cluster, deploy, pipeline, tools
from dmine_spark.cli.registry import COMMANDS
from dmine_spark.config import ConfigError

__all__ = ["main", "build_parser"]

_VERBOSE_HELP = "more logging (-vv for debug), and the traceback of an error"


def build_parser() -> argparse.ArgumentParser:
    """The ``dmine`` parser, with a subcommand per registered command."""
    p = argparse.ArgumentParser(prog="dmine", description="dmine_spark: mine business text with Spark.")
    p.add_argument("--version", action="version", version=f"dmine_spark {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = [m.__name__ for m in (pipeline, deploy, catalog, cluster, tools)]
    for cmd in sorted(COMMANDS.values(), key=lambda c: groups.index(c.run.__module__)):
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        # also after the command (`dmine run x.yaml -v`); SUPPRESS keeps a -v given before it
        sp.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
        cmd.configure(sp)
    return p


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc`` (a Spark error's message runs on with the JVM's stack)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


_CONFIG_ERROR = re.compile(r"(?:^|\n)\s*(?:[\w.]+\.)?ConfigError: ([^\n]+)")
_PY_ERROR = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): .+$")


def worker_error(exc: BaseException) -> tuple[str | None, bool]:
    """The error a Spark task raised in its Python worker, from the driver's exception text.

    Returns
    -------
    (str or None, bool)
        A ``ConfigError`` raised on an executor (a user's mistake, such as a
        model missing there) as its message and ``True``; else the last
        ``<Name>Error: <message>`` line of a Python worker's traceback and
        ``False``; else ``(None, False)``.
    """
    text = str(exc)
    found = _CONFIG_ERROR.findall(text)
    if found:
        return found[-1].strip(), True
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if _PY_ERROR.match(line.strip())]
        if lines:
            return lines[-1], False
    return None, False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dmine`` with ``argv`` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return COMMANDS[args.command].run(args)
    except (ConfigError, LookupError, FileNotFoundError) as exc:
        if args.verbose:
            traceback.print_exc()
        msg = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        sys.stderr.write(f"dmine: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("dmine: interrupted\n")
        return 130
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        cause, mistake = worker_error(exc)
        if mistake:  # a user's mistake found on an executor is one line, as on the driver
            sys.stderr.write(f"dmine: error: {cause}\n")
            return 2
        hint = "" if args.verbose else "; rerun with --verbose for the traceback"
        what = cause or f"{type(exc).__name__}: {_first_line(exc)}"
        sys.stderr.write(f"dmine: error: {args.command} failed: {what}{hint}\n")
        return 1
