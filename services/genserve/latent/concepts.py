"""Concept vectors: directions in a model's latent space that add or remove one property.

A concept is the mean latent point of examples that have the property minus the mean of
examples that lack it (the general form of the "smile vector"). Built-in concepts ship with a
model in `<model>.concepts.safetensors` (from labels, e.g. digit 3 → 8, and from measured
attributes such as stroke thickness and slant); users define their own from example images,
kept in Redis per API key and model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
import safetensors.torch
import torch
from safetensors import safe_open

from genserve.common.errors import InvalidArgument, NotFound
from genserve.common.redis_clients import text_of

NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class ConceptVector:
    name: str
    model: str
    source: str  # "label" | "attribute" | "user"
    description: str
    vector: torch.Tensor  # (latent_dim,)
    positives: int = 0
    negatives: int = 0


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidArgument(f"concept name must be 1 to 64 of [a-z0-9_-], got {name!r}")
    return name


def concepts_path(weights: Path) -> Path:
    return weights.with_name(weights.name.replace(".safetensors", ".concepts.safetensors"))


def save_builtin(path: Path, concepts: list[ConceptVector]) -> None:
    tensors = {c.name: c.vector.float().contiguous() for c in concepts}
    meta = {c.name: {"source": c.source, "description": c.description, "positives": c.positives,
                     "negatives": c.negatives} for c in concepts}  # fmt: skip
    safetensors.torch.save_file(tensors, str(path), metadata={"concepts": json.dumps(meta, sort_keys=True)})


def load_builtin(path: Path, model: str) -> dict[str, ConceptVector]:
    if not path.exists():
        return {}
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("concepts", "{}"))
        return {
            name: ConceptVector(
                name,
                model,
                info["source"],
                info["description"],
                handle.get_tensor(name).float(),
                int(info.get("positives", 0)),
                int(info.get("negatives", 0)),
            )
            for name, info in meta.items()
        }


class UserConcepts:
    """The callers' own concepts, per API key and model, in Redis (or in memory without one)."""

    def __init__(self, client: aioredis.Redis | None, max_per_key: int) -> None:
        self.client = client
        self.max_per_key = max_per_key
        self.memory: dict[str, dict[str, str]] = {}

    @staticmethod
    def _key(owner: str, model: str) -> str:
        return f"genserve:concepts:{owner}:{model}"

    async def _all(self, owner: str, model: str) -> dict[str, str]:
        key = self._key(owner, model)
        if self.client is None:
            return dict(self.memory.get(key, {}))
        raw = await self.client.hgetall(key)  # type: ignore[misc]
        return {text_of(k): text_of(v) for k, v in raw.items()}

    async def list(self, owner: str, model: str) -> list[ConceptVector]:
        return [_from_json(model, text) for _, text in sorted((await self._all(owner, model)).items())]

    async def get(self, owner: str, model: str, name: str) -> ConceptVector | None:
        text = (await self._all(owner, model)).get(name)
        return None if text is None else _from_json(model, text)

    async def put(self, owner: str, concept: ConceptVector) -> None:
        existing = await self._all(owner, concept.model)
        if concept.name in existing:
            raise InvalidArgument(f"you already have a concept {concept.name!r} for {concept.model}; delete it first")
        if len(existing) >= self.max_per_key:
            raise InvalidArgument(
                f"you have {len(existing)} concepts for {concept.model}, the limit (GENSERVE_LATENT_MAX_CONCEPTS)"
            )
        text = _to_json(concept)
        key = self._key(owner, concept.model)
        if self.client is None:
            self.memory.setdefault(key, {})[concept.name] = text
        else:
            await self.client.hset(key, concept.name, text)  # type: ignore[misc]

    async def delete(self, owner: str, model: str, name: str) -> ConceptVector:
        concept = await self.get(owner, model, name)
        if concept is None:
            raise NotFound(f"you have no concept {name!r} for {model}")
        key = self._key(owner, model)
        if self.client is None:
            self.memory.get(key, {}).pop(name, None)
        else:
            await self.client.hdel(key, name)  # type: ignore[misc]
        return concept


def _to_json(concept: ConceptVector) -> str:
    return json.dumps({
        "name": concept.name, "description": concept.description, "vector": concept.vector.tolist(),
        "positives": concept.positives, "negatives": concept.negatives,
    })  # fmt: skip


def _from_json(model: str, text: str) -> ConceptVector:
    data = json.loads(text)
    return ConceptVector(
        data["name"], model, "user", data["description"], torch.tensor(data["vector"], dtype=torch.float32),
        int(data["positives"]), int(data["negatives"]),
    )  # fmt: skip
