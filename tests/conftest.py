"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and developers have the project's shared folder (spec, fixtures) beside the clone.
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.fail(f"reference fixtures not found at {path}: the shared/ folder must sit beside the repository")
    return path
