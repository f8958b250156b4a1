"""Fixtures of the functional tests that several modules share."""

import pytest


@pytest.fixture(scope="session")
def watched(tmp_path_factory):
    """A demo-sized watched CI history (:func:`serve_helpers.watched_history`), built once."""
    pytest.importorskip("lightgbm")
    from serve_helpers import watched_history

    return watched_history(tmp_path_factory.mktemp("watched"))
