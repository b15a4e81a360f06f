"""Shared fixtures (the helpers they use are in helpers.py).

``tok``: the tiny word-level ChatML tokenizer. ``setup``: the inputs of a tiny run
(:func:`helpers.tiny_run_inputs`), built once per test module.
"""
from __future__ import annotations

import pytest

from helpers import make_tokenizer, tiny_run_inputs


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("runner"))
