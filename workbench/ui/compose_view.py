"""The Comp-LLM view (old import path).

The model is :mod:`workbench.ui.models.compose` (no Panel needed), the Panel view
:mod:`workbench.ui.panel.compose`, the notebook version :mod:`workbench.ui.widgets.compose`
(``ComposePanel`` and ``compose_widget`` load their view module when first asked for).

Examples
--------
>>> from workbench.ui.compose_view import ComposeModel, ComposePanel    # doctest: +SKIP
>>> model = ComposeModel.from_bundle(bundle)                             # doctest: +SKIP
>>> result = model.run()                                                 # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr
from workbench.ui.models.compose import EXAMPLES, ComposeModel

__all__ = ["EXAMPLES", "ComposeModel"]  # + the lazy views

__getattr__ = lazy_getattr(__name__, {"ComposePanel": "workbench.ui.panel.compose",
                                      "compose_widget": "workbench.ui.widgets.compose"}, globals())
