"""Built-in concept vectors of a latent model, made once from data and shipped beside its weights.

For a VAE the latent points are the posterior means of the test split's images; for a GAN, of
20,000 prior samples labelled by the dataset's classifier. Label concepts move one class to
another (mean latent of class b minus that of class a: "3-to-8"). Attribute concepts add a
measured property: within each class, the mean latent of the top fifth by the attribute minus
that of the bottom fifth, averaged over classes, so the edit changes the property, not the class.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from genserve.latent.attributes import slant, thickness
from genserve.latent.concepts import ConceptVector

LABEL_PAIRS: dict[str, list[tuple[int, int]]] = {
    "mnist": [(3, 8), (1, 7), (4, 9), (5, 6)],
    "fashion-mnist": [(2, 4), (7, 9), (0, 6), (3, 4)],  # pullover→coat, sneaker→ankle boot, t-shirt→shirt, dress→coat
}
ATTRIBUTES: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "thicker": (thickness, "thicker strokes (top vs bottom fifth of each class by stroke width)"),
    "slant-right": (slant, "leans further right (top vs bottom fifth of each class by shear)"),
}
FIFTH = 0.2


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def label_concepts(model: str, latents: Tensor, labels: Tensor, dataset: str, names: list[str]) -> list[ConceptVector]:
    concepts = []
    for a, b in LABEL_PAIRS.get(dataset, []):
        vector = latents[labels == b].mean(0) - latents[labels == a].mean(0)
        name = f"{slug(names[a])}-to-{slug(names[b])}"
        description = f"turns a {names[a]} into a {names[b]} (mean latent of class {b} minus class {a})"
        concepts.append(
            ConceptVector(name, model, "label", description, vector, int((labels == b).sum()), int((labels == a).sum()))
        )
    return concepts


def attribute_concepts(model: str, latents: Tensor, labels: Tensor, images: Tensor) -> list[ConceptVector]:
    concepts = []
    for name, (measure, description) in ATTRIBUTES.items():
        values = measure(images)
        differences, weights, positives = [], [], 0
        for label in labels.unique():
            members = labels == label
            if int(members.sum()) < 10:
                continue
            scores, points = values[members], latents[members]
            low, high = torch.quantile(scores, FIFTH), torch.quantile(scores, 1 - FIFTH)
            top, bottom = points[scores >= high], points[scores <= low]
            differences.append(top.mean(0) - bottom.mean(0))
            weights.append(float(members.sum()))
            positives += int(top.shape[0])
        weight = torch.tensor(weights)[:, None] / sum(weights)
        vector = (torch.stack(differences) * weight).sum(0)
        concepts.append(ConceptVector(name, model, "attribute", description, vector, positives, positives))
    return concepts
