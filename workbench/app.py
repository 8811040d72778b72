"""The CoE Workbench Panel app: one tab per panel, a fresh app per browser session, offline assets.

The heavy objects (prompts, embedder, router, scores, expert pool, CoE) are built once and shared by
every session; what a user changes in a session (the edited category-to-expert map, the chat
history, the map selection) lives in per-session models, so two browser sessions never see each
other's unsaved edits. Assets (Bokeh, Panel, Tabulator, Plotly) are served by the Panel server
itself or inlined, never fetched from a CDN, so the app works without internet.

A session is cheap until it is used: a page request builds only the header and the empty tabs; a
tab's panel is built when the browser first shows it (the first tab once the page has loaded).
The served app checks the ``Host`` header of every request against the names it listens on (DNS
rebinding), and with ``token=...`` asks every browser for an access token once (a cookie then).
The Mapping tab reads and writes map files only inside one folder (:func:`files_folder`).

Examples
--------
>>> from workbench.app import serve
>>> serve(port=5006)  # blocks; Ctrl-C stops it         # doctest: +SKIP

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
from collections.abc import Mapping
from typing import Any

from workbench.errors import UsageError, WorkbenchError

TITLE = "CoE Workbench"

from workbench.ui.offline import (  # noqa: F401  (offline_extension: notebooks import it from here)
    STATIC_URL, EXTENSIONS, OFFLINE_JS, in_served_session, offline_js_file, offline_extension)
# the demo bundle, built once per process (a memo like functools.cache; tests pass their own)
_bundle_lock = threading.Lock()
_default_bundle: Any = None


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


def files_folder() -> Any:
    """The one folder the app's map file box reads and writes (a :class:`~workbench.safeio.FileBox`):
    ``$COE_WORKBENCH_FILES`` or ``cache_dir("files")``."""
    from workbench.ui.models.mapping_editor import default_file_box

    return default_file_box()


class _Session:
    """One browser session's own objects, each built on first use."""

    def __init__(self, bundle: Any, files: Any = None) -> None:
        self.bundle = bundle
        self.files = files
        self._editor: Any = None
        self._editor_error: BaseException | None = None

    def editor(self) -> Any:
        """The session's mapping editor model (shared by the Mapping and Explore tabs), or None."""
        if self._editor is None and self._editor_error is None:
            try:
                from workbench.ui.models import MappingEditorModel

                files = self.files if self.files is not None else files_folder()
                self._editor = MappingEditorModel.from_bundle(self.bundle, files=files)
            except Exception as exc:  # the Mapping tab says so; the other tabs still work
                self._editor_error = exc
                return None
            _follow_editor(self.bundle, self._editor)
        return self._editor


def _explore_tab(bundle: Any, editor: Any = None):
    """Embed panel + cluster map; the Embed panel follows the session's map and mapping editor."""
    import panel as pn

    if isinstance(bundle, _Session):
        bundle, editor = bundle.bundle, bundle.editor()
    try:
        from workbench.ui.models import ClusterMapModel, EmbedModel
        from workbench.ui.panel.explore import ClusterMapPanel, EmbedPanel

        cluster = ClusterMapModel.from_bundle(bundle)
        follow = {"mapping": editor} if editor is not None else {}
        embed = EmbedModel.from_bundle(bundle, map=cluster, **follow)
        # one map on the page: the typed prompt is a star on the cluster map
        embed.param.watch(lambda e: cluster.mark(embed.embedding, embed.text), ["version"])
        return pn.Column(EmbedPanel(embed, show_map=False), ClusterMapPanel(cluster),
                         sizing_mode="stretch_width")
    except Exception as exc:
        return _missing("Explore", "building the Embed panel and the cluster map failed.", exc)


def _mapping_tab(bundle: Any):
    session = bundle if isinstance(bundle, _Session) else _Session(bundle)
    try:
        from workbench.ui.panel.mapping_editor import MappingEditorPanel
    except ImportError as exc:
        return _missing("Mapping", "workbench.ui.mapping_editor (the category-to-expert map editor) "
                        "could not be imported.", exc)
    editor = session.editor()
    if editor is None:
        return _missing("Mapping", "building the mapping editor failed.", session._editor_error)
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
    bundle = bundle.bundle if isinstance(bundle, _Session) else bundle
    try:
        from workbench.ui.models import ChatModel
        from workbench.ui.panel.chat import ChatPanel

        # the experts' own default answer length (160 tokens for the real demo), raisable in the tab
        specs = list(getattr(bundle, "specs", None) or [])
        default = int((specs[0].generation or {}).get("max_new_tokens", 64)) if specs else 64
        return ChatPanel(ChatModel.from_bundle(bundle, max_new_tokens=default))
    except Exception as exc:
        return _missing("Chat", "building the live CoE chat failed.", exc)


def _tiers_tab(bundle: Any):
    bundle = bundle.bundle if isinstance(bundle, _Session) else bundle
    try:
        from workbench.ui.models import TierModel
        from workbench.ui.panel.tiers import TierPanel

        return TierPanel(TierModel.from_bundle(bundle))
    except Exception as exc:
        return _missing("Tiers", "building the expert tier view failed.", exc)


def _compose_tab(bundle: Any):
    bundle = bundle.bundle if isinstance(bundle, _Session) else bundle
    try:
        from workbench.ui.panel.compose import ComposePanel
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


class _LazyViews(Mapping):
    """Tab name -> its view, each built on first access (``app.views["Chat"]``)."""

    def __init__(self, names: tuple[str, ...], build: Any) -> None:
        self._names, self._build = names, build

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return self._build(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _loading(name: str):
    import panel as pn

    return pn.pane.HTML(f"<div class='coe-loading' data-tab='{html.escape(name)}' "
                        f"style='padding:24px;color:#57606a'>Loading {html.escape(name)}…</div>",
                        sizing_mode="stretch_width")


def create_app(bundle: Any = None, *, tabs: tuple[str, ...] | None = None, share_state: bool = False,
               lazy: bool = True, files: Any = None):
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
    lazy : bool
        ``True`` (default): build each tab's panel when it is first shown (in a served session the
        first tab once the page has loaded, so a page request stays cheap); ``False`` builds all.
    files : FileBox or path, optional
        The folder the Mapping tab's file box may read and write; default :func:`files_folder`.

    Returns
    -------
    panel.Column
        A header and the tabs; each tab that cannot be built says what is missing. ``app.views``
        maps tab names to their views (built on access), ``app.bundle`` is the session's bundle.
    """
    import panel as pn

    offline_extension()
    if bundle is None:
        bundle = default_bundle()
    names = tuple(tabs) if tabs else tuple(TABS)
    unknown = [t for t in names if t not in TABS]
    if unknown:
        raise UsageError(f"unknown tab(s) {unknown}; choose from {list(TABS)}")
    if files is not None and not hasattr(files, "resolve"):
        from workbench.safeio import FileBox

        files = FileBox(files)
    own = bundle if share_state else session_bundle(bundle)
    session = _Session(own, files)
    header = pn.pane.HTML(
        f"<div class='coe-header' style='display:flex;align-items:baseline;gap:12px'>"
        f"<h2 style='margin:4px 0'>{TITLE}</h2><span style='color:#57606a'>Composition of Experts: "
        "embed, map, route, edit the category-to-expert map, chat with the live CoE</span></div>",
        sizing_mode="stretch_width")
    holders = {name: pn.Column(_loading(name), sizing_mode="stretch_width") for name in names}
    built: dict[str, Any] = {}
    lock = threading.RLock()

    def build(name: str) -> Any:
        with lock:
            if name not in built:
                built[name] = TABS[name](session)
                holders[name].objects = [built[name]]
            return built[name]

    if in_served_session():
        pn.state.on_session_destroyed(_session_closed)  # give the session's memory back
    panels = pn.Tabs(*[(name, holders[name]) for name in names], dynamic=False,
                     sizing_mode="stretch_width", css_classes=["coe-tabs"])
    panels.param.watch(lambda event: build(names[event.new]), "active")
    if lazy:
        pn.state.onload(lambda: build(names[panels.active]))  # now, outside a served session
    else:
        for name in names:
            build(name)
    app = pn.Column(header, panels, sizing_mode="stretch_width")
    app.bundle = own  # for tests and notebooks: the session's own objects
    app.tabs = panels
    app.views = _LazyViews(names, build)  # tab name -> its view (each real panel has .model)
    app.session = session
    return app


_trim_lock = threading.Lock()
_trim_timer: threading.Timer | None = None


def _release_memory() -> None:
    """Collect the closed sessions' objects and hand freed heap pages back to the OS (glibc)."""
    global _trim_timer
    import ctypes
    import gc

    with _trim_lock:
        _trim_timer = None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: Python's own arenas are still released
        pass


def _session_closed(session_context: Any) -> None:
    """A browser session ended: release memory once the burst of closing sessions is over."""
    global _trim_timer
    with _trim_lock:
        if _trim_timer is not None:
            _trim_timer.cancel()
        _trim_timer = threading.Timer(1.0, _release_memory)
        _trim_timer.daemon = True
        _trim_timer.start()


#: host names every served app answers to (besides the address it listens on)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
TOKEN_COOKIE = "coe_workbench_token"


def _host_name(host: str) -> str:
    """``"[::1]:5006"`` -> ``"::1"``, ``"Example.org:80"`` -> ``"example.org"``."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _served_hosts(address: str, allow_hosts: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Host names a server on ``address`` answers to: the address, this machine's local names,
    its host name and addresses when it listens on every interface, and ``allow_hosts``."""
    import socket

    hosts = [address, *LOCAL_HOSTS]
    if address in ("0.0.0.0", "::", ""):
        try:
            name = socket.gethostname()
            hosts += [name, socket.getfqdn()]
            hosts += [info[4][0] for info in socket.getaddrinfo(name, None)]
        except OSError:
            pass
    out: list[str] = []
    for h in (*hosts, *allow_hosts):
        h = _host_name(str(h)) if h not in ("*",) else h
        if h and h not in ("0.0.0.0", "::") and h not in out:
            out.append(h)
    return out


def access_guard(address: str = "127.0.0.1", *, allow_hosts: tuple[str, ...] | list[str] = (),
                 token: str | None = None):
    """A Bokeh ``AuthProvider`` for the served app: a ``Host`` check and an optional access token.

    - Every request (page, websocket, login) must name an allowed host in its ``Host`` header:
      the listening address, ``localhost``, ``127.0.0.1``, ``::1`` and ``allow_hosts`` (for a
      reverse proxy). Others get 403, which stops DNS-rebinding pages from reaching the app.
    - With ``token``, a browser opens ``http://HOST:PORT/?token=TOKEN`` once (or types the token
      into the login page); the server then keeps a cookie holding a hash of it.
    """
    import hashlib
    import hmac

    from bokeh.server.auth_provider import AuthProvider
    from tornado.web import HTTPError, RequestHandler

    allowed = set(_served_hosts(address, allow_hosts))
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest() if token else None

    def check_host(handler: Any) -> None:
        name = _host_name(handler.request.host)
        if name not in allowed and "*" not in allowed:
            raise HTTPError(403, reason="Host not allowed",
                            log_message=f"Host header {name[:80]!r} is not one of {sorted(allowed)}; "
                                        "serve with --allow-host NAME to add it")

    def get_user(handler: Any) -> str | None:
        check_host(handler)
        if digest is None:
            return "local"
        given = handler.get_argument("token", None)
        if given is not None and hmac.compare_digest(
                hashlib.sha256(given.encode("utf-8")).hexdigest(), digest):
            if not getattr(handler, "ws_connection", None) and hasattr(handler, "set_cookie"):
                handler.set_cookie(TOKEN_COOKIE, digest, httponly=True, samesite="Strict")
            return "token"
        cookie = handler.get_cookie(TOKEN_COOKIE)
        if cookie is not None and hmac.compare_digest(cookie, digest):
            return "token"
        return None

    class LoginHandler(RequestHandler):
        def get(self) -> None:
            check_host(self)
            wrong = self.get_argument("token", None) is not None
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(
                f"<!doctype html><title>{TITLE}: access token</title><body style='font-family:"
                "sans-serif;max-width:36em;margin:4em auto'><h2>" + TITLE + "</h2><p>This app "
                "needs its access token: open the URL that <code>coe-workbench serve --token</code> "
                "printed, or paste the token here.</p>"
                + ("<p style='color:#b00'>That token is not right.</p>" if wrong else "")
                + "<form action='./' method='get'><input name='token' type='password' size='40' "
                "autofocus> <button>Open</button></form></body>")

    class Guard(AuthProvider):
        @property
        def get_user(self):
            return get_user

        @property
        def login_url(self):
            return "/coe-login"

        @property
        def login_handler(self):
            return LoginHandler

    return Guard()


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, bundle: Any = None, *,
          threaded: bool = False, start: bool = True, token: str | None = None,
          allow_hosts: tuple[str, ...] | list[str] = (), files: Any = None,
          autosave_max_age_s: float | None = None, lazy: bool = True, **kwargs: Any):
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
    token : str, optional
        Require this access token from every browser (``/?token=...`` once, then a cookie).
    allow_hosts : list of str
        More host names the ``Host`` header may name (a reverse proxy's); ``"*"`` allows any.
    files : FileBox or path, optional
        The Mapping tab's file folder (default :func:`files_folder`).
    autosave_max_age_s : float, optional
        Session autosaves older than this are removed at start (default 7 days).
    lazy : bool
        Build each session's tabs when first shown (default); ``False`` builds them all per page
        request (see ``benchmarks/bench_app_load.py``).
    **kwargs
        Passed to ``panel.serve``.

    Returns
    -------
    The Panel/Bokeh server (or its thread when ``threaded``).
    """
    import panel as pn
    from pathlib import Path

    from workbench.ui.models.mapping_editor import AUTOSAVE_MAX_AGE_S, clean_autosaves

    static_dir = str(Path(offline_js_file()).parent)
    offline_extension(served=True)
    if bundle is None:
        bundle = default_bundle()
    if files is not None and not hasattr(files, "resolve"):
        from workbench.safeio import FileBox

        files = FileBox(files)
    clean_autosaves(AUTOSAVE_MAX_AGE_S if autosave_max_age_s is None else autosave_max_age_s)
    static_dirs = {**kwargs.pop("static_dirs", {}), STATIC_URL: static_dir}
    hosts = _served_hosts(address, allow_hosts)
    origins = kwargs.pop("websocket_origin", None) or (
        ["*"] if "*" in hosts else [f"{h}:{port}" for h in hosts if ":" not in h])  # Bokeh: no IPv6
    kwargs.setdefault("auth_provider", access_guard(address, allow_hosts=allow_hosts, token=token))
    return pn.serve(
        lambda: create_app(bundle, files=files, lazy=lazy),
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

