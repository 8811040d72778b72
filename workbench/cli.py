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
import os
import pkgutil
import re
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


#: ``name='value'`` / ``name=...`` / ``name=`` in a library message (Python argument syntax)
_PY_ARG = re.compile(r"\b([a-z][a-z0-9_]*)=(?:'([^']*)'|\"([^\"]*)\"|(\.\.\.)|(?=[,)\s]))")


def flag_syntax(message: str, parser: argparse.ArgumentParser) -> str:
    """Rewrite the library's Python-argument hints (``on_error='skip'``, ``text=``) in
    ``message`` as this command's flags (``--on-error skip``, ``--text``); names the command has
    no flag for are left as they are."""
    flags: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public accessor for the option table
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            flags[action.dest] = longs[0]

    def swap(m: re.Match) -> str:
        name = m.group(1)
        flag = flags.get(name)
        if flag is None:
            return m.group(0)
        value = next((g for g in m.groups()[1:4] if g is not None), None)
        return flag if value in (None, "...") else f"{flag} {value}"

    return _PY_ARG.sub(swap, message)


def _small_cpu_defaults(quiet: bool) -> None:
    """Process defaults for a command line run: one torch thread on machines with few cores
    (two threads collapse on a busy 2-core machine; ``OMP_NUM_THREADS`` overrides), and no
    transformers/hub progress bars under ``--quiet``."""
    if "OMP_NUM_THREADS" not in os.environ and (os.cpu_count() or 1) <= 2:
        os.environ["OMP_NUM_THREADS"] = "1"
    if quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:  # already imported (main() called in-process)
            sys.modules["transformers"].utils.logging.disable_progress_bar()


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
    _small_cpu_defaults(bool(getattr(args, "quiet", False)))
    try:
        return int(commands[args.command].run(args) or 0)
    except WorkbenchError as exc:
        sub = parser._subparsers._group_actions[0].choices[args.command]  # the command's parser
        print(f"coe-workbench {args.command}: error: {flag_syntax(str(exc), sub)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
