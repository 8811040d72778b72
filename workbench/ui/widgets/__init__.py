"""ipywidgets views for notebooks (need the ``app`` extra), over the models of
:mod:`workbench.ui.models`.

- :mod:`.explore`: ``explore_widget``; :mod:`.mapping_editor`: ``mapping_editor_widget``;
  :mod:`.compose`: ``compose_widget``
"""
