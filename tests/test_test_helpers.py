"""The suite's own rule: a missing test dependency skips locally and fails under CI=true."""

from __future__ import annotations

import pytest

from .helpers import require_module, unavailable


def test_a_missing_dependency_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no such thing"):
        unavailable("no such thing")


def test_a_missing_dependency_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_module("mlxrpc_no_such_module")
    assert require_module("json").dumps([]) == "[]"
