"""Sub-commands of ``coe-workbench``; see :mod:`workbench.cli` for the module contract."""
