"""The examples of docs/api.md and of the README's Python section run and print what they say."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("document", ["docs/api.md", "README.md"])
def test_python_examples_print_what_the_document_says(document, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples name bundled configs by their relative path; they write nothing
    before = sorted(os.listdir(ROOT / "outputs"))
    failed, attempted = doctest.testfile(str(ROOT / document), module_relative=False, verbose=False,
                                         optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0, f"{failed} of {attempted} examples of {document} failed (see above)"
    assert sorted(os.listdir(ROOT / "outputs")) == before
