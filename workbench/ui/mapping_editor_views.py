"""Views of the mapping editor (old import path): ``MappingEditorPanel``
(:mod:`workbench.ui.panel.mapping_editor`) and ``mapping_editor_widget``
(:mod:`workbench.ui.widgets.mapping_editor`), each loaded when first asked for. The model is
:mod:`workbench.ui.models.mapping_editor`.
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr
from workbench.ui.models.mapping_editor import CSS, MappingEditorModel

__all__ = ["CSS", "MappingEditorModel"]  # + the lazy views

__getattr__ = lazy_getattr(__name__, {"MappingEditorPanel": "workbench.ui.panel.mapping_editor",
                                      "mapping_editor_widget": "workbench.ui.widgets.mapping_editor"},
                           globals())
