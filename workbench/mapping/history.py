"""The undo/redo history of a category-to-expert map: edits, grouped into undoable actions."""
from __future__ import annotations

from typing import NamedTuple

from workbench.errors import MappingError

__all__ = ["Edit", "EditGroup", "MapHistory"]


class Edit(NamedTuple):
    """One hand edit of a map: ``category`` moved from ``old`` to ``new`` expert."""

    category: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.category}: {self.old} -> {self.new}"


class EditGroup(tuple):
    """The edits of one multi-row action (an optimize, a load), undone and redone together."""

    def __str__(self) -> str:
        return "; ".join(map(str, self))


class MapHistory:
    """Undoable actions (each one or more :class:`Edit`), oldest first, and the redo stack.

    It only records; the map applies. :meth:`undo` and :meth:`redo` return the action as an
    :class:`Edit` when it is a single edit, else as an :class:`EditGroup`.
    """

    def __init__(self) -> None:
        self._done: list[tuple[Edit, ...]] = []
        self._undone: list[tuple[Edit, ...]] = []

    @staticmethod
    def _result(action: tuple[Edit, ...]) -> Edit | EditGroup:
        return action[0] if len(action) == 1 else EditGroup(action)

    def record(self, edits: list[Edit]) -> None:
        """A new action was applied: remember it, forget what could be redone."""
        self._done.append(tuple(edits))
        self._undone.clear()

    def undo(self) -> Edit | EditGroup:
        if not self._done:
            raise MappingError("nothing to undo: the map has no edits")
        action = self._done.pop()
        self._undone.append(action)
        return self._result(action)

    def redo(self) -> Edit | EditGroup:
        if not self._undone:
            raise MappingError("nothing to redo: no edit has been undone since the last change")
        action = self._undone.pop()
        self._done.append(action)
        return self._result(action)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def edits(self) -> list[Edit]:
        return [e for action in self._done for e in action]

    @property
    def actions(self) -> list[tuple[Edit, ...]]:
        return list(self._done)
