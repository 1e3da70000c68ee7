"""Lazy package exports (chalicelib.lazy): names resolve to their submodule's objects."""

from __future__ import annotations

import pytest

import chalicelib.db
import chalicelib.flux


def test_an_exported_name_is_its_submodules_object_and_is_listed() -> None:
    from chalicelib.db.jobs import JobModel
    from chalicelib.flux.exceptions import FluxError

    assert chalicelib.flux.FluxError is FluxError
    assert chalicelib.db.JobModel is JobModel
    assert JobModel in chalicelib.db.ALL_MODELS
    assert "KeyPool" in dir(chalicelib.flux) and "ALL_MODELS" in dir(chalicelib.db)


def test_a_name_not_exported_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        chalicelib.flux.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        chalicelib.db.nope  # noqa: B018
