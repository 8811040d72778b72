"""The ``coe-workbench`` command line.

Each sub-command lives in its own module under :mod:`workbench.commands` and exposes::

    NAME: str                  # the sub-command, e.g. "embed"
    HELP: str                  # one line for ``coe-workbench --help``
    ORDER: int                 # position in the help listing (optional)
    def register(parser): ...  # add arguments to an ``argparse.ArgumentParser``
    def run(args) -> int: ...  # do the work; heavy imports go in here

Command modules must stay light at import time so ``--help`` is instant. Running the program with
no sub-command runs ``DEFAULT_COMMAND`` (the offline demo).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from workbench import __version__
from workbench.errors import WorkbenchError

DEFAULT_COMMAND = "demo"


def _command_modules():
    import workbench.commands as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"workbench.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="coe-workbench",
        description=(
            "CoE Workbench: embed prompt sets, map their category clusters, fit the category "
            "router and the budgeted category-to-expert map, and run a live Composition of "
            f"Experts. With no command, runs `{DEFAULT_COMMAND}` on the offline default."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"coe-workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {}
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.register(p)
        commands[mod.NAME] = mod
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        if DEFAULT_COMMAND in commands:
            argv = [DEFAULT_COMMAND, *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(commands[args.command].run(args) or 0)
    except WorkbenchError as exc:
        print(f"coe-workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
