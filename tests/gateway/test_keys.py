"""The key ring: keys from GENSERVE_API_KEYS and a keys file that is read again when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genserve.common.config import ConfigError
from genserve.common.watched_file import RECHECK_SECONDS
from genserve.gateway.auth import KeyRing, _digest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += RECHECK_SECONDS


def principals(ring: KeyRing, secret: str) -> list[str]:
    return [key.principal for key in ring.current() if key.digest == _digest(secret)]


def replace(path: Path, text: str) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_keys_from_the_variable_and_the_file_are_both_valid(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\n\ncarol:from-file\n  unnamed-key  \n")
    ring = KeyRing("alice:from-env", str(keys))
    assert principals(ring, "from-env") == ["alice"] and principals(ring, "from-file") == ["carol"]
    assert principals(ring, "unnamed-key")[0].startswith("key-")
    assert ring.enabled and not KeyRing("", "").enabled


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good_keys(tmp_path: Path) -> None:
    keys, clock = tmp_path / "keys", Clock()
    keys.write_text("carol:one\n")
    ring = KeyRing("", str(keys), clock)
    replace(keys, "dave:two\n")
    assert principals(ring, "one") == ["carol"], "read again only after the recheck interval"
    clock.advance()
    assert principals(ring, "two") == ["dave"] and principals(ring, "one") == []
    replace(keys, "dave:two\n:no-name\n")
    clock.advance()
    assert principals(ring, "two") == ["dave"], "a malformed file must not lock everyone out"
    replace(keys, "")
    clock.advance()
    assert ring.current() == [] and ring.enabled, "an emptied file revokes every key; the gateway stays closed"


def test_a_missing_or_malformed_file_at_start_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        KeyRing("", str(tmp_path / "absent"))
    (tmp_path / "bad").write_text("ok:fine\nname-only:\n")
    with pytest.raises(ConfigError, match="line 2 has an empty name or key"):
        KeyRing("", str(tmp_path / "bad"))
