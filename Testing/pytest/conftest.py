"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# CI and developers have the project's shared folder (spec, fixtures) beside the clone.
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.fail(f"reference fixtures not found at {path}: the shared/ folder must sit beside the repository")
    return path


def pytest_configure(config):
    # ONNX exports made by the inference tests (and by their subprocesses, which inherit the
    # environment) go to a throw-away cache instead of the user's ~/.cache/lightunetr.
    if "LIGHTUNETR_CACHE" not in os.environ:
        cache = tempfile.mkdtemp(prefix="lightunetr-test-cache-")
        os.environ["LIGHTUNETR_CACHE"] = cache
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
