from __future__ import annotations

import inspect

from ragtide import errors
from ragtide.api.errors import STATUS, status_for


def _error_classes() -> list[type[errors.RagtideError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RagtideError)
    ]


def test_every_error_has_a_unique_code() -> None:
    codes = [cls.code for cls in _error_classes()]
    assert len(codes) == len(set(codes))
    assert all(code and code == code.lower() for code in codes)


def test_every_error_is_exported_and_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in _error_classes():
        assert cls.__name__ in errors.__all__
        assert cls.__name__ in doc and cls.code in doc


def test_every_error_maps_to_a_specific_status() -> None:
    # Only "a 4xx/5xx and not 500" here; each code's exact status, row by row as the
    # README's table gives it, is pinned by tests/api/test_error_table.py.
    for cls in _error_classes():
        instance = cls.__new__(cls)
        status = status_for(instance)
        assert 400 <= status <= 599
        if cls not in (
            errors.RagtideError,
            errors.ConfigError,
            errors.PluginError,
            errors.PluginNotFound,
            errors.PluginFailed,  # a tenant's plugin is configuration too (its requests only)
        ):
            assert status != 500, cls  # only configuration faults are the server's


def test_table_keys_are_error_classes() -> None:
    assert all(issubclass(cls, errors.RagtideError) for cls in STATUS)
