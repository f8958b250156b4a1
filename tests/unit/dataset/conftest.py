"""Fixtures for dataset tests."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from fakes import fake_history  # noqa: E402


@pytest.fixture
def history():
    """A fake cache of 40 runs (0.7.2/0.7.3 column orders alternate); run 5 is corrupt."""
    return fake_history(n=40, bad=(5,))
