"""Old import path of the mapping editor's model: this name is an alias of
:mod:`workbench.ui.models.mapping_editor` (the same module object, so settings such as
``MAX_MAP_FILE_BYTES`` patched here apply there). ``MappingEditorPanel`` and
``mapping_editor_widget`` are still importable from here (loaded when asked for).
"""
import sys

from workbench.ui.models import mapping_editor as _model

sys.modules[__name__] = _model
