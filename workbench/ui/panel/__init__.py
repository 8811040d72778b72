"""Panel views (need the ``app`` extra): each renders a model of :mod:`workbench.ui.models` and
forwards events to it.

- :mod:`.explore`: ``EmbedPanel``, ``ClusterMapPanel``
- :mod:`.mapping_editor`: ``MappingEditorPanel``
- :mod:`.chat`: ``ChatPanel``; :mod:`.tiers`: ``TierPanel``; :mod:`.compose`: ``ComposePanel``
"""
