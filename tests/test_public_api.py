"""The top-level API: the objects a notebook user holds, every error class, and moved helpers that
still resolve with a DeprecationWarning naming their module."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import warnings

import pytest

import workbench as wb
from workbench import errors

HELD = {"PromptSet", "Embedder", "Map", "CategoryRouter", "DirectRouter", "ExpertScores",
        "ModelRegistry", "CategoryExpertMap", "optimize_mapping", "pareto_frontier", "ExpertPool",
        "ExpertSpec", "CoE", "Composer"}


def test_all_names_the_held_objects_and_every_error_class_and_little_else():
    exported = set(wb.__all__)
    assert HELD <= exported
    error_classes = {n for n, v in vars(errors).items()
                     if inspect.isclass(v) and issubclass(v, (Exception, Warning))
                     and v.__module__ == "workbench.errors"}
    error_classes.add("RouterNotFittedError")  # built on first use (it subclasses sklearn's)
    assert error_classes <= exported
    others = exported - HELD - error_classes - {"__version__"}
    assert others <= {"MapBuilder", "QueryGraph", "load_demo_prompts", "build_demo_bundle"}, others


@pytest.mark.parametrize("name", sorted(set(wb.__all__) - {"__version__"}))
def test_every_exported_name_resolves_from_its_module(name):
    value = getattr(wb, name)
    assert getattr(importlib.import_module(wb._LAZY[name]), name) is value


@pytest.mark.parametrize("name", ["project", "knn_purity", "Trace", "parse_size"])
def test_moved_helpers_still_resolve_with_a_warning_naming_the_module(name):
    module = wb._MOVED[name]
    with pytest.warns(DeprecationWarning, match=f"from {module} import {name}"):
        value = getattr(wb, name)
    assert value is getattr(importlib.import_module(module), name)


def test_exported_names_resolve_without_a_warning_and_unknown_names_raise():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wb.CoE  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wb.nope  # noqa: B018


def test_import_workbench_stays_light():
    code = ("import sys, workbench as wb; wb.__all__; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'panel', 'umap') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
