"""Without Java 17 the TorchServe tests skip, and the reason they print says what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ts", reason="TorchServe is not installed (make torchserve)")

from genserve.torchserve.launcher import java_missing_reason


def test_no_java_on_path_is_named_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = java_missing_reason()
    assert reason is not None and "no java on PATH" in reason and "openjdk-17-jre-headless" in reason


def test_an_old_java_is_named_with_its_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_412\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    reason = java_missing_reason()
    assert reason is not None and "is Java 8: TorchServe needs Java 17 or later" in reason
