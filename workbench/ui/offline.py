"""Offline Panel: every asset inlined or served from this machine, in the app and in notebooks.

:func:`offline_extension` replaces ``pn.extension(...)`` for the workbench's views; the app
(:mod:`workbench.app`) serves :data:`OFFLINE_JS` as a same-origin static file.
"""
from __future__ import annotations

__all__ = ["EXTENSIONS", "OFFLINE_JS", "STATIC_URL", "in_served_session", "offline_extension",
           "offline_js_file"]

EXTENSIONS = ("tabulator", "plotly")

STATIC_URL = "coe-static"


#: Bokeh's TablerIcon view imports its icon font stylesheet from cdn.jsdelivr.net (hard-coded in
#: bokeh.js). This snippet, inlined into the page after Bokeh loads, points it at an empty data:
#: URL so no icon ever reaches for the network; the app's own buttons use inline SVG icons.
OFFLINE_JS = """\
(function () {
  // Tabler icons: Panel's icon views fetch a webfont stylesheet from jsdelivr; the workbench
  // draws its icons as inline SVG, so the stylesheet is replaced by an empty one.
  // Panel's own stylesheets: in a notebook the models Panel sends after the first render keep
  // their cdn.holoviz.org URLs; they are rewritten to the copy Panel's Jupyter server extension
  // serves at <base_url>panel_dist/ (same host), so nothing is fetched from the internet.
  var CDN = /^https?:\\/\\/cdn\\.holoviz\\.org\\/panel\\/[^\\/]+\\/dist\\//;
  function baseUrl() {
    try {
      var el = document.getElementById("jupyter-config-data");
      if (el) { return JSON.parse(el.textContent).baseUrl || "/"; }
    } catch (e) {}
    return (document.body && document.body.dataset && document.body.dataset.baseUrl) || null;
  }
  function patch() {
    try {
      var models = window.Bokeh && Bokeh.Models;
      if (!models) { return false; }
      var icon = models.get("TablerIcon");
      if (icon && icon.prototype.default_view) { icon.prototype.default_view._url = "data:text/css,"; }
      var sheet = models.get("ImportedStyleSheet");
      var base = baseUrl();
      if (sheet && base !== null && !sheet.prototype.__coe_offline) {
        var underlying = sheet.prototype.underlying;
        sheet.prototype.underlying = function () {
          var url = this.url;
          if (CDN.test(url)) {
            this.setv({url: base.replace(/\\/?$/, "/") + "panel_dist/" + url.replace(CDN, "").split("?")[0]},
                      {silent: true});
          }
          return underlying.call(this);
        };
        sheet.prototype.__coe_offline = true;
      }
      return Boolean(icon);
    } catch (e) { return false; }
  }
  if (!patch()) {  // Bokeh may still be loading: retry for a while
    var tries = 0, timer = setInterval(function () {
      if (patch() || ++tries > 600) { clearInterval(timer); }
    }, 50);
  }
})();
"""


def offline_js_file() -> str:
    from workbench._paths import atomic_write_text, cache_dir

    path = cache_dir("app") / "coe_offline.js"
    if not path.exists() or path.read_text(encoding="utf-8") != OFFLINE_JS:
        atomic_write_text(path, OFFLINE_JS)
    return str(path)


def in_served_session() -> bool:
    import panel as pn

    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def offline_extension(*, served: bool | None = None) -> None:
    """Load Panel's extensions with inline resources: no CDN, nothing fetched from the internet.

    Call it instead of ``pn.extension(...)`` in a notebook that shows the workbench's Panel views.
    Served apps (``served=True``, or called inside a server session) get the icon patch of
    :data:`OFFLINE_JS` as a same-origin static file; in a notebook the patch is sent as a
    JavaScript output (a file path there would be fetched relative to the notebook's URL and break
    Panel's loader).
    """
    import panel as pn

    if served is None:
        served = in_served_session()
    pn.config.inline = True
    if served:
        pn.config.js_files = {**pn.config.js_files, "coe_offline": STATIC_URL + "/coe_offline.js"}
    pn.extension(*EXTENSIONS, inline=True)
    if not served:
        try:
            from IPython import get_ipython
            from IPython.display import Javascript, display
        except ImportError:  # plain Python: nothing to patch
            return
        if get_ipython() is not None:
            display(Javascript(OFFLINE_JS))
