"""The CoE Workbench Panel app: one tab per panel, a fresh app per browser session, offline assets.

The heavy objects (prompts, embedder, router, scores, expert pool, CoE) are built once and shared by
every session; what a user changes in a session (the edited category-to-expert map, the chat
history, the map selection) lives in per-session models, so two browser sessions never see each
other's unsaved edits. Assets (Bokeh, Panel, Tabulator, Plotly) are served by the Panel server
itself or inlined, never fetched from a CDN, so the app works without internet.

Examples
--------
>>> from workbench.app import serve
>>> serve(port=5006)                                  # doctest: +SKIP  (blocks; Ctrl-C to stop)

In a notebook:

>>> from workbench.app import create_app
>>> create_app(bundle)                                # doctest: +SKIP
"""
from __future__ import annotations

import copy
import dataclasses
import html
import threading
import traceback
from typing import Any

from workbench.errors import WorkbenchError

TITLE = "CoE Workbench"
EXTENSIONS = ("tabulator", "plotly")

_STATIC_URL = "coe-static"
_serving = False
_bundle_lock = threading.Lock()
_default_bundle: Any = None


#: Bokeh's TablerIcon view imports its icon font stylesheet from cdn.jsdelivr.net (hard-coded in
#: bokeh.js). This snippet, inlined into the page after Bokeh loads, points it at an empty data:
#: URL so no icon ever reaches for the network; the app's own buttons use inline SVG icons.
OFFLINE_JS = """\
(function () {
  function patch() {
    try {
      var model = window.Bokeh && Bokeh.Models && Bokeh.Models.get("TablerIcon");
      if (model && model.prototype.default_view) {
        model.prototype.default_view._url = "data:text/css,";
        return true;
      }
    } catch (e) {}
    return false;
  }
  if (!patch()) { document.addEventListener("DOMContentLoaded", patch); }
})();
"""


def _offline_js_file() -> str:
    from workbench._paths import atomic_write_text, cache_dir

    path = cache_dir("app") / "coe_offline.js"
    if not path.exists() or path.read_text(encoding="utf-8") != OFFLINE_JS:
        atomic_write_text(path, OFFLINE_JS)
    return str(path)


def offline_extension() -> None:
    """Load Panel's extensions with inline resources: no CDN, nothing fetched from the internet.

    Call it instead of ``pn.extension(...)`` in a notebook that shows the workbench's Panel views.
    Served apps also get the icon patch of :data:`OFFLINE_JS` as a same-origin static file; in a
    notebook the patch is sent as a JavaScript output (a file path there would be fetched relative
    to the notebook's URL and break Panel's loader).
    """
    import panel as pn

    pn.config.inline = True
    if _serving:
        pn.config.js_files = {**pn.config.js_files, "coe_offline": _STATIC_URL + "/coe_offline.js"}
    pn.extension(*EXTENSIONS, inline=True)
    if not _serving:
        try:
            from IPython import get_ipython
            from IPython.display import Javascript, display
        except ImportError:  # plain Python: nothing to patch
            return
        if get_ipython() is not None:
            display(Javascript(OFFLINE_JS))


def default_bundle(*, progress: bool = True) -> Any:
    """The offline demo bundle, built (or loaded from the cache) once per process."""
    global _default_bundle
    with _bundle_lock:
        if _default_bundle is None:
            try:
                from workbench.demo import build_demo_bundle
            except ImportError as exc:  # pragma: no cover - only while the demo is being written
                raise WorkbenchError(f"the demo bundle is not available ({exc}); pass bundle=... "
                                     "to create_app/serve") from exc
            _default_bundle = build_demo_bundle(progress=progress)
        return _default_bundle


def session_bundle(bundle: Any) -> Any:
    """A per-session view of ``bundle``: shares the heavy objects, owns a copy of the mapping.

    The pool, models, embedder, router and prompts are shared; ``mapping`` is copied so that edits
    in one browser session are invisible to the others until saved. When the bundle's CoE can be
    re-pointed at a mapping, the session's chat routes with the session's own (edited) map.
    """
    mapping = getattr(bundle, "mapping", None)
    if mapping is None or not hasattr(mapping, "copy"):
        return bundle
    own = mapping.copy()
    changes: dict[str, Any] = {"mapping": own}
    coe = getattr(bundle, "coe", None)
    if coe is not None and hasattr(coe, "with_mapping"):
        changes["coe"] = coe.with_mapping(own)
    elif coe is not None and getattr(coe, "mapping", None) is mapping:
        session_coe = copy.copy(coe)  # shares embedder, router and pool
        session_coe.mapping = own
        changes["coe"] = session_coe
    if dataclasses.is_dataclass(bundle):
        return dataclasses.replace(bundle, **changes)
    clone = copy.copy(bundle)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone


def _missing(tab: str, what: str, exc: BaseException | None = None):
    """A placeholder that says what is missing (never fake content)."""
    import panel as pn

    detail = ""
    if exc is not None:
        detail = (f"<pre style='white-space:pre-wrap;font-size:12px'>"
                  f"{html.escape(''.join(traceback.format_exception_only(type(exc), exc)).strip())}</pre>")
    return pn.pane.HTML(
        f"<div class='coe-missing' data-tab='{html.escape(tab)}'><h3>{html.escape(tab)} is not available</h3>"
        f"<p>{html.escape(what)}</p>{detail}</div>", sizing_mode="stretch_width")


def _explore_tab(bundle: Any, editor: Any = None):
    """Embed panel + cluster map; the Embed panel follows the session's map and mapping editor."""
    import panel as pn

    try:
        from workbench.ui.explore import ClusterMapModel, ClusterMapPanel, EmbedModel, EmbedPanel

        cluster = ClusterMapModel.from_bundle(bundle)
        follow = {"mapping": editor} if editor is not None else {}
        embed = EmbedModel.from_bundle(bundle, map=cluster, **follow)
        return pn.Column(EmbedPanel(embed), ClusterMapPanel(cluster), sizing_mode="stretch_width")
    except Exception as exc:
        return _missing("Explore", "building the Embed panel and the cluster map failed.", exc)


def _mapping_tab(bundle: Any):
    try:
        from workbench.ui.mapping_editor import MappingEditorModel
        from workbench.ui.mapping_editor_views import MappingEditorPanel
    except ImportError as exc:
        return _missing("Mapping", "workbench.ui.mapping_editor (the category-to-expert map editor) "
                        "could not be imported.", exc)
    try:
        editor = MappingEditorModel.from_bundle(bundle)
    except Exception as exc:
        return _missing("Mapping", "building the mapping editor failed.", exc)
    _follow_editor(bundle, editor)
    return MappingEditorPanel(editor)


def _follow_editor(bundle: Any, editor: Any) -> None:
    """Point the session's bundle and CoE at the editor's own map, so chat routes with the edits."""
    def link(*_: Any) -> None:
        mapping = editor.mapping
        try:
            bundle.mapping = mapping
        except (AttributeError, dataclasses.FrozenInstanceError):
            return
        coe = getattr(bundle, "coe", None)
        if coe is not None and hasattr(coe, "mapping"):
            coe.mapping = mapping

    link()
    editor.param.watch(link, "version")


def _chat_tab(bundle: Any):
    try:
        from workbench.ui.chat import ChatModel, ChatPanel

        # the experts' own default answer length (160 tokens for the real demo), raisable in the tab
        specs = list(getattr(bundle, "specs", None) or [])
        default = int((specs[0].generation or {}).get("max_new_tokens", 64)) if specs else 64
        return ChatPanel(ChatModel.from_bundle(bundle, max_new_tokens=default))
    except Exception as exc:
        return _missing("Chat", "building the live CoE chat failed.", exc)


def _tiers_tab(bundle: Any):
    try:
        from workbench.ui.tiers import TierModel, TierPanel

        return TierPanel(TierModel.from_bundle(bundle))
    except Exception as exc:
        return _missing("Tiers", "building the expert tier view failed.", exc)


def _compose_tab(bundle: Any):
    try:
        from workbench.ui.compose_view import ComposePanel
    except ImportError as exc:
        return _missing("Compose", "workbench.ui.compose_view (the Comp-LLM query graph view) could "
                        "not be imported.", exc)
    try:
        from_bundle = getattr(ComposePanel, "from_bundle", None)
        return from_bundle(bundle) if from_bundle else ComposePanel(bundle)
    except Exception as exc:
        return _missing("Compose", "building the Comp-LLM panel failed.", exc)


TABS = {
    "Explore": _explore_tab,
    "Mapping": _mapping_tab,
    "Chat": _chat_tab,
    "Tiers": _tiers_tab,
    "Compose": _compose_tab,
}


def create_app(bundle: Any = None, *, tabs: tuple[str, ...] | None = None, share_state: bool = False):
    """Build the app for one session: a ``pn.Tabs`` with Explore, Mapping, Chat, Tiers and Compose.

    Parameters
    ----------
    bundle : DemoBundle, optional
        The shared heavy objects; the offline demo bundle when omitted (built once per process).
    tabs : tuple of str, optional
        A subset of ``("Explore", "Mapping", "Chat", "Tiers", "Compose")`` in the order wanted.
    share_state : bool
        ``False`` (default) gives this app its own copy of the mapping (per-session edits);
        ``True`` edits ``bundle.mapping`` in place (a notebook that wants the edits in its bundle).

    Returns
    -------
    panel.Column
        A header and the tabs; each tab that cannot be built says what is missing.
    """
    import panel as pn

    offline_extension()
    if bundle is None:
        bundle = default_bundle()
    names = tuple(tabs) if tabs else tuple(TABS)
    unknown = [t for t in names if t not in TABS]
    if unknown:
        raise WorkbenchError(f"unknown tab(s) {unknown}; choose from {list(TABS)}")
    own = bundle if share_state else session_bundle(bundle)
    header = pn.pane.HTML(
        f"<div class='coe-header' style='display:flex;align-items:baseline;gap:12px'>"
        f"<h2 style='margin:4px 0'>{TITLE}</h2><span style='color:#57606a'>Composition of Experts: "
        "embed, map, route, edit the category-to-expert map, chat with the live CoE</span></div>",
        sizing_mode="stretch_width")
    # the mapping editor first: the session's CoE then routes with the editor's own map
    built: dict[str, Any] = {}
    for name in sorted(names, key=lambda n: n != "Mapping"):
        if name == "Explore":
            built[name] = _explore_tab(own, editor=getattr(built.get("Mapping"), "model", None))
        else:
            built[name] = TABS[name](own)
    panels = pn.Tabs(*[(name, built[name]) for name in names], dynamic=False,
                     sizing_mode="stretch_width", css_classes=["coe-tabs"])
    app = pn.Column(header, panels, sizing_mode="stretch_width")
    app.bundle = own  # for tests and notebooks: the session's own objects
    app.tabs = panels
    app.views = built  # tab name -> its view (each view has .model when it is a real panel)
    return app


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, bundle: Any = None, *,
          threaded: bool = False, start: bool = True, **kwargs: Any):
    """Serve the app at ``http://{address}:{port}/`` (a fresh app per browser session).

    Parameters
    ----------
    port : int
        TCP port (``0`` picks a free one; read it from the returned server).
    address : str
        Interface to listen on; ``127.0.0.1`` keeps the app private to this machine.
    show : bool
        Open a browser tab.
    bundle : DemoBundle, optional
        Shared heavy objects; the demo bundle when omitted (built before the server starts).
    threaded : bool
        Run the server in a background thread and return it (``.stop()`` ends it); used by tests.
    start : bool
        Start the IO loop (blocks unless ``threaded``).
    **kwargs
        Passed to ``panel.serve``.

    Returns
    -------
    The Panel/Bokeh server (or its thread when ``threaded``).
    """
    import panel as pn
    from pathlib import Path

    global _serving
    static_dir = str(Path(_offline_js_file()).parent)
    _serving = True
    offline_extension()
    if bundle is None:
        bundle = default_bundle()
    static_dirs = {**kwargs.pop("static_dirs", {}), _STATIC_URL: static_dir}
    origins = kwargs.pop("websocket_origin", None) or [f"{address}:{port}", f"localhost:{port}",
                                                       f"127.0.0.1:{port}"]
    return pn.serve(
        lambda: create_app(bundle),
        port=port,
        address=address,
        show=show,
        title=TITLE,
        websocket_origin=origins,
        threaded=threaded,
        start=start,
        static_dirs=static_dirs,
        **kwargs,
    )
