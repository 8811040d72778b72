"""One exception family for the workbench.

Every error says what was wrong, where (file, row, key) and what to do about it. Each class also
derives from the closest built-in exception so callers can catch ``ValueError``/``KeyError`` etc.
"""
from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class PromptSetError(WorkbenchError, ValueError):
    """A prompt file or table is malformed (bad column, empty prompt, duplicate id, ...)."""


class UnknownFormatError(PromptSetError):
    """A file's format could not be inferred or is not supported."""


class EmbedderError(WorkbenchError, RuntimeError):
    """The embedding model could not be loaded or run."""


class ModelNotFoundError(EmbedderError, FileNotFoundError):
    """A model id or path could not be resolved (offline, typo, missing package)."""


class MapError(WorkbenchError, ValueError):
    """A projection was asked for with bad inputs or parameters."""


class RouterError(WorkbenchError, ValueError):
    """A router was misconfigured, unfitted, or loaded from a bad file."""


class ScoresError(WorkbenchError, ValueError):
    """Expert scores are missing, NaN, or do not line up with prompts or experts."""


class MappingError(WorkbenchError, ValueError):
    """A category-to-expert map names unknown categories/experts or is incomplete."""


class InfeasibleBudgetError(MappingError):
    """No category-to-expert map satisfies the requested budget."""


class RegistryError(WorkbenchError, KeyError):
    """A model registry (parameter counts) is malformed or misses a model."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ExpertError(WorkbenchError, RuntimeError):
    """An expert failed to load, place or generate."""


class PlacementError(ExpertError):
    """An expert cannot be placed within the pool's tier budgets."""


class GraphError(WorkbenchError, ValueError):
    """A query graph is invalid (cycle, unknown reference, empty sub-query) or unparsable."""


class MapTimeoutError(MapError, TimeoutError):
    """A background map was not ready within the requested timeout."""


class DecomposeError(GraphError):
    """The LLM decomposer gave no valid graph within its retries; ``attempts`` holds every try."""

    def __init__(self, message: str, attempts: list[dict] | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts or []


class DemoError(WorkbenchError, ValueError):
    """The demo expert spec file or the demo prompt set is malformed."""


class ChatError(WorkbenchError, ValueError):
    """A chat message was empty or not text, or the CoE stream ended without an answer."""


class FileBoxError(WorkbenchError, ValueError):
    """A file name typed into the app points outside its folder, or at a file of another kind."""


class UsageError(WorkbenchError, ValueError):
    """A bad argument, option or setting: the message names the value and what is accepted."""


class PlotError(WorkbenchError, ValueError):
    """A figure was given data it cannot draw (the message says what shape it needs)."""


class BundleError(WorkbenchError, ValueError):
    """A saved CoE bundle is missing a file, was changed after export, or does not fit together."""


class RequestError(WorkbenchError, ValueError):
    """A bad API request: an OpenAI-style error with its HTTP status and the field at fault.

    ``param`` names the request field (``"messages[1].content"``, ``"max_tokens"``), ``type`` and
    ``code`` follow OpenAI's error object; ``status`` is the HTTP status (4xx).
    """

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.status, self.type, self.code = param, int(status), type, code


class TrustRemoteCodeWarning(UserWarning):
    """An expert spec file turns on ``trust_remote_code``: the model's own Python code will run."""


class MissingDependencyError(WorkbenchError, ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error raised when an optional package is absent.

    >>> str(missing_dependency("panel", "app", "the Panel app"))[:30]
    'the Panel app needs the packag'
    """
    return MissingDependencyError(
        f"{purpose} needs the package {package!r}, which is not installed. "
        f"Install it with: pip install 'coe-workbench[{extra}]' (or pip install {package})."
    )


_LAZY_CLASSES: dict[str, type] = {}


def _router_not_fitted_error() -> type:
    from sklearn.exceptions import NotFittedError

    class RouterNotFittedError(RouterError, NotFittedError):
        """A router was used before ``fit`` (or ``load``).

        Also a scikit-learn ``NotFittedError``, so sklearn's own checks recognise it. It is built
        on first use (``errors.RouterNotFittedError``): importing scikit-learn when
        ``workbench.errors`` is imported would make ``import workbench`` slow.
        """

    RouterNotFittedError.__module__ = __name__
    RouterNotFittedError.__qualname__ = "RouterNotFittedError"
    return RouterNotFittedError


def __getattr__(name: str):
    if name == "RouterNotFittedError":
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _router_not_fitted_error()
        return _LAZY_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
