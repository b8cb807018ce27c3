"""A file's parsed content that follows the file: read again when it changes, so a rotated Secret
(API keys, a TorchServe token) takes effect without a restart.

The file is looked at no more than once per recheck interval; a change is seen by inode, mtime and
size, because a Kubernetes Secret volume swaps a symlink on update (the followed file's inode
changes, not only its mtime). A file that cannot be read or parsed at start-up is a configuration
error; one that breaks later keeps the last good content, logged, rather than failing every call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from genserve.common.config import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")
RECHECK_SECONDS = 1.0  # a rotated file takes effect within this long


class WatchedFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        parse: Callable[[Path], T],
        what: str,
        clock: Callable[[], float] = time.monotonic,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.path = path
        self.parse = parse
        self.what = what
        self.clock = clock
        self.recheck_seconds = recheck_seconds
        self.value = parse(path)  # raises ConfigError: a broken file at start-up is a configuration error
        self.stamp = self._stamp()
        self.checked_at = clock()

    def _stamp(self) -> tuple[int, int, int]:
        status = os.stat(self.path)
        return status.st_ino, status.st_mtime_ns, status.st_size

    def current(self) -> T:
        now = self.clock()
        if now - self.checked_at < self.recheck_seconds:
            return self.value
        self.checked_at = now
        try:
            stamp = self._stamp()
            if stamp != self.stamp:
                self.value = self.parse(self.path)
                self.stamp = stamp
                log.info("%s %s read again", self.what, self.path)
        except (OSError, ConfigError) as error:
            # Mid-rotation or a typo: keep what was read last rather than lock everyone out.
            log.error("%s %s not reloaded, what was read before stays in use: %s", self.what, self.path, error)
        return self.value
