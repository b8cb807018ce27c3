"""Pieces of request and answer schemas shared by the image routes, and the models the OpenAPI
document names that FastAPI cannot find by itself.

FastAPI puts in `components/schemas` only the models of declared bodies and `response_model`s.
The image routes read their bodies themselves (JSON or multipart, see `bodies`) and describe SSE
events, so they register those schemas here (`schema_ref`, `raw_schema_ref`) and the app adds
them to its document (`add_registered_schemas`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic.json_schema import models_json_schema

from genserve.client import ImageResult

COMPONENTS = "#/components/schemas/"
_models: dict[str, type[BaseModel]] = {}
_raw: dict[str, dict[str, Any]] = {}

# A data: URL's head, as a page's FileReader.readAsDataURL makes it: sent on as plain base64.
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)


def _image_bytes(value: object) -> object:
    """A JSON string → its base64-decoded bytes; bytes (a multipart file's) pass as they are.

    Only the base64 is checked here: the image itself (format, size, pixels) is the service's to
    check, with its own message.
    """
    if not isinstance(value, str):
        return value
    text = "".join(_DATA_URL.sub("", value.strip(), count=1).split())  # line-wrapped base64 too
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be the image file's bytes in base64 (or a data: URL)") from None


# An image in a JSON body: the file (PNG, JPEG, WebP, GIF or BMP) in base64.
ImageData = Annotated[
    bytes,
    BeforeValidator(_image_bytes),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "An image file (PNG, JPEG, WebP, GIF or BMP) in base64, or as a data: URL.",
        }
    ),
]


class ImageOut(BaseModel):
    """An image the service made."""

    png: str = Field(description="The PNG file, base64-encoded.")
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")


def image_out(image: ImageResult) -> ImageOut:
    return ImageOut(png=base64.b64encode(image.png).decode("ascii"), width=image.width, height=image.height)


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`'s schema, which the document will hold."""
    _models[model.__name__] = model
    return {"$ref": COMPONENTS + model.__name__}


def raw_schema_ref(name: str, schema: dict[str, Any]) -> dict[str, str]:
    """A reference to a schema written out by hand (a form's), held under `name`."""
    _raw[name] = schema
    return {"$ref": COMPONENTS + name}


def add_registered_schemas(document: dict[str, Any]) -> None:
    """Add every registered schema (and those they refer to) that the document lacks."""
    if not _models and not _raw:
        return
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(model, "validation") for model in _models.values()], ref_template=COMPONENTS + "{model}"
    )
    for name, schema in {**definitions.get("$defs", {}), **_raw}.items():
        schemas.setdefault(name, schema)
