"""Reading user files safely: bounded quotes in messages, one strict YAML loader, a confined folder.

Every loader of a user file goes through these helpers, so the same rules hold everywhere:

- :func:`short` quotes a user value in an error message in at most ~80 characters (``reprlib``),
  so a huge or secret value never ends up whole in a message, a log or the browser.
- :func:`load_yaml` parses YAML with PyYAML's safe loader but refuses aliases (``*name``: a
  400-byte "billion laughs" file otherwise expands to gigabytes) and duplicate keys (YAML says
  they are an error; PyYAML silently keeps the last one), naming the line.
- :class:`FileBox` confines the file names a browser session may type (the app's map file box) to
  one folder: no absolute paths, no ``..``, no symlinks out of it.

Examples
--------
>>> from workbench.safeio import load_yaml, short
>>> load_yaml("a: 1\\nb: [x, y]\\n", source="inline.yaml")
{'a': 1, 'b': ['x', 'y']}
>>> short("x" * 500)[:20], len(short("x" * 500)) <= 80
("'xxxxxxxxxxxxxxxxxxx", True)
"""
from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Any

from workbench.errors import FileBoxError, WorkbenchError  # noqa: F401 (FileBoxError re-exported)

__all__ = ["MAX_QUOTE", "MAX_USER_FILE_BYTES", "FileBox", "FileBoxError", "describe", "load_json",
           "load_yaml", "read_text_limited", "read_yaml_file", "short", "short_list"]

#: most characters of a user value quoted in an error message
MAX_QUOTE = 80
#: largest user text file (YAML/JSON map, spec, registry) read whole; larger ones are refused
MAX_USER_FILE_BYTES = 16 * 2**20

_REPRS: dict[int, reprlib.Repr] = {}


def _repr_for(limit: int) -> reprlib.Repr:
    """A ``reprlib.Repr`` whose strings and other reprs fit in about ``limit`` characters."""
    r = _REPRS.get(limit)
    if r is None:
        r = reprlib.Repr()
        r.maxstring = r.maxother = max(limit - 6, 8)
        r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = 6
        r.maxdict = 4
        r.maxlevel = 2
        _REPRS[limit] = r
    return r


def short(value: Any, limit: int = MAX_QUOTE) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (strings, containers, anything).

    Use it wherever an error message quotes a value that came from a user file or argument.
    """
    try:
        text = _repr_for(int(limit)).repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def short_list(names: Any, limit: int = 20, *, quote: bool = False, sep: str = ", ") -> str:
    """``", ".join(names)`` with at most ``limit`` names, each cut to :data:`MAX_QUOTE` characters.

    The rest is summarised as ``"... (N more)"``, so a message listing known names (categories,
    experts, columns) stays short however many there are. ``quote=True`` quotes each name like
    :func:`short` (``'a', 'b'``).

    Examples
    --------
    >>> short_list(["a", "b", "c"], limit=2)
    'a, b, ... (1 more)'
    >>> short_list(["x", "y"], quote=True)
    "'x', 'y'"
    """
    names = list(names)
    shown = []
    for n in names[: max(0, int(limit))]:
        if quote:
            shown.append(short(n))
        else:
            text = str(n)
            shown.append(text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "...")
    if len(names) > len(shown):
        shown.append(f"... ({len(names) - len(shown)} more)")
    return sep.join(shown)


def describe(value: Any) -> str:
    """What ``value`` is, without quoting it: ``"a 1,700-character string"``, ``"a mapping of 3 keys"``.

    For messages about files whose values must not be echoed (the app's map box: a file that is
    not a map may hold secrets).

    Examples
    --------
    >>> describe("secret" * 100), describe({"a": 1}), describe(None)
    ('a 600-character string', 'a mapping of 1 key', 'an empty value (null)')
    """
    if value is None:
        return "an empty value (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"a {len(value):,}-character string" if value else "an empty string"
    if isinstance(value, dict):
        n = len(value)
        return f"a mapping of {n:,} key{'' if n == 1 else 's'}"
    if isinstance(value, (list, tuple)):
        n = len(value)
        return f"a list of {n:,} item{'' if n == 1 else 's'}"
    return f"a value of type {type(value).__name__}"


def _yaml_loader(error: type[Exception], source: str):
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases and with duplicate keys as errors."""

        def compose_node(self, parent, index):  # PyYAML hook
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise error(f"{source} line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) "
                            "are not accepted in workbench files; write the value out in full")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # the base class raises its own clear error
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        raise error(f"{source} line {line}: duplicate key {short(key)} (first on "
                                    f"line {seen[key]}); keep one of them")
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_yaml(text: str, source: str = "<yaml>", *, error: type[Exception] = WorkbenchError) -> Any:
    """Parse ``text`` as YAML (JSON is YAML too) without aliases and without duplicate keys.

    Parameters
    ----------
    text : str
        The document.
    source : str
        A name for messages (usually the file path).
    error : exception class
        The workbench error to raise (the caller's family: ``MappingError``, ``ExpertError``...).

    Raises
    ------
    error
        Invalid YAML (with its line), an alias, or a duplicate key (both lines named).
    """
    import yaml

    loader = _yaml_loader(error, source)(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise error(f"{source} is nested too deeply to be a workbench file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{source}{where} is not valid YAML: {short(problem, 120)[1:-1]}") from None
    finally:
        loader.dispose()


def load_json(text: str, source: str = "<json>", *, error: type[Exception] = WorkbenchError) -> Any:
    """``json.loads(text)`` that refuses duplicate keys (naming the key and its line).

    Invalid JSON raises ``error`` with the line and column (never the text itself).
    """
    import json

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                line = _json_key_line(text, key)
                where = f" line {line}" if line else ""
                raise error(f"{source}{where}: duplicate key {short(key)}; keep one of them")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise error(f"{source} is nested too deeply to be a workbench file") from None
    except json.JSONDecodeError as exc:
        raise error(f"{source} line {exc.lineno} column {exc.colno} is not valid JSON: "
                    f"{short(exc.msg, 120)[1:-1]}") from None


def _json_key_line(text: str, key: str) -> int | None:
    """The line of the second ``"key":`` in ``text`` (the duplicate), if it can be found."""
    import json
    import re

    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    for found, match in enumerate(pattern.finditer(text), start=1):
        if found == 2:
            return text.count("\n", 0, match.start()) + 1
    return None


def read_text_limited(path: str | os.PathLike, *, error: type[Exception] = WorkbenchError,
                      max_bytes: int = MAX_USER_FILE_BYTES, what: str = "file") -> str:
    """The UTF-8 text of ``path``, refusing files over ``max_bytes`` and undecodable bytes."""
    import stat

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO or a device would block or fail
        raise error(f"{what} {path} is not a regular file")
    size = info.st_size
    if size > max_bytes:
        raise error(f"{what} {path} is {size / 2**20:.1f} MiB; files over {max_bytes / 2**20:.0f} MiB "
                    "are not read (is it the right file?)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is over {max_bytes / 2**20:.0f} MiB; it is not read "
                    "(is it the right file?)")
    try:
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text()
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_yaml_file(path: str | os.PathLike, *, error: type[Exception] = WorkbenchError,
                   what: str = "file") -> Any:
    """:func:`load_yaml` of a file (size-limited, UTF-8), errors naming the file and line."""
    return load_yaml(read_text_limited(path, error=error, what=what), str(path), error=error)


class FileBox:
    """A folder that confines the file names a (browser) user types.

    :meth:`resolve` turns a name like ``"maps/my_map.yaml"`` into a path inside :attr:`root`, and
    refuses absolute paths, ``..`` parts, names whose real path (symlinks followed) leaves the
    folder, and suffixes outside ``suffixes``.

    Parameters
    ----------
    root : str or Path
        The folder (created when missing).
    suffixes : iterable of str
        Allowed suffixes, lower case with the dot (``(".yaml", ".yml", ".json")``).
    """

    def __init__(self, root: str | os.PathLike, suffixes: tuple[str, ...] = (".yaml", ".yml", ".json")):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.suffixes = tuple(s.lower() for s in suffixes)

    def __repr__(self) -> str:
        return f"FileBox({str(self.root)!r})"

    def resolve(self, name: str | os.PathLike) -> Path:
        """The path of ``name`` inside the box; :class:`FileBoxError` when it would leave it."""
        text = str(name).strip()
        if not text:
            raise FileBoxError("type a file name (for example my_map.yaml) first")
        if "\x00" in text:
            raise FileBoxError("a file name cannot contain a NUL character")
        rel = Path(text)
        if rel.is_absolute() or text.startswith("~"):
            raise FileBoxError(f"{short(text)} is an absolute path; type a name inside the workbench "
                               f"folder {self.root} (for example my_map.yaml)")
        if any(part == ".." for part in rel.parts):
            raise FileBoxError(f"{short(text)} goes up with '..'; files stay inside the workbench "
                               f"folder {self.root}")
        if rel.suffix.lower() not in self.suffixes:
            raise FileBoxError(f"{short(text)} must end in {', '.join(self.suffixes)}")
        path = self.root / rel
        real = path.resolve()  # follows symlinks, also of a missing file's parents
        if real != self.root and self.root not in real.parents:
            raise FileBoxError(f"{short(text)} is a link to a place outside the workbench folder "
                               f"{self.root}; files stay inside it")
        return path

    def names(self) -> list[str]:
        """The files in the box with an allowed suffix (relative names, sorted)."""
        out = []
        for p in sorted(self.root.rglob("*")):
            if p.is_file() and p.suffix.lower() in self.suffixes:
                try:
                    self.resolve(p.relative_to(self.root))
                except FileBoxError:
                    continue
                out.append(str(p.relative_to(self.root)))
        return out
