"""``import distrain``: names and submodules load on first use."""
import sys

import pytest

import distrain


def test_a_name_that_is_neither_an_export_nor_a_submodule_is_no_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nowhere'"):
        distrain.nowhere


def test_a_submodule_loads_on_first_use():
    assert distrain.errors is sys.modules["distrain.errors"]


def test_a_submodule_whose_dependency_is_missing_names_the_dependency(tmp_path, monkeypatch):
    monkeypatch.setattr(distrain, "__path__", [*distrain.__path__, str(tmp_path)])
    (tmp_path / "needs_more.py").write_text("import no_such_dependency\n")
    with pytest.raises(ModuleNotFoundError) as raised:
        distrain.needs_more
    assert raised.value.name == "no_such_dependency"
