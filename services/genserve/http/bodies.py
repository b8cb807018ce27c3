"""Request bodies that carry images: JSON with base64 images, or multipart/form-data with files.

Both arrive at one route and become one pydantic model, so the route has one code path and the
same checks and messages. FastAPI cannot declare "this model, as JSON or as a form" on one
route, so such routes read their body here, and their OpenAPI request body comes from
`request_body`. A form maps onto the model by `FormShape`: file parts by name ("style" →
"styles", every one of them), structured options (layers, weights) as JSON text, the others as
plain text fields that pydantic converts as it would JSON ("3" → 3).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from genserve.http.errors import ApiError
from genserve.http.schemas import raw_schema_ref, schema_ref

Body = TypeVar("Body", bound=BaseModel)

JSON_TYPE = "application/json"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class FormShape:
    """How a form's parts map onto a body model's fields.

    `files`: form part → model field, for image parts named otherwise in the form ("style" →
    "styles"); `lists`: model fields that take every part of their name (several files);
    `structured`: model fields given in a form as JSON text (`layers={"relu4_1": 2}`).
    """

    files: Mapping[str, str] = field(default_factory=dict)
    images: frozenset[str] = frozenset()
    lists: frozenset[str] = frozenset()
    structured: frozenset[str] = frozenset()

    def form_name(self, model_field: str) -> str:
        for part, target in self.files.items():
            if target == model_field:
                return part
        return model_field


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, model: type[Body], shape: FormShape) -> tuple[Body, bool]:
    """The body as `model`, and whether it came as a form. Refusals are FastAPI's (a 400 naming
    the field, in the form's names for a form) or 415 for another content type."""
    media_type = _media_type(request)
    if media_type in FORM_TYPES:
        async with request.form() as form:  # leaving closes the spooled files
            values = await _form_values(form, shape)
        return _validated(model, values, shape), True
    if media_type not in ("", JSON_TYPE) and not media_type.endswith("+json"):
        message = (
            f"send the body as {JSON_TYPE} (images in base64) or multipart/form-data (images as files), "
            f"not {media_type}"
        )
        raise ApiError(415, message, param="Content-Type", code="unsupported_media_type")
    try:
        return model.model_validate_json(await request.body()), False
    except ValidationError as error:
        raise _refusal(error, FormShape()) from None


async def _form_values(form: FormData, shape: FormShape) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for part in dict.fromkeys(form.keys()):
        name = shape.files.get(part, part)
        items = [await item.read() if isinstance(item, UploadFile) else item for item in form.getlist(part)]
        if name in shape.lists:
            values[name] = items
        elif len(items) > 1:
            raise ApiError(400, f"{part} is given {len(items)} times; give it once", param=part, code="invalid_type")
        elif name in shape.structured and isinstance(items[0], str):
            try:
                values[name] = json.loads(items[0])
            except json.JSONDecodeError as error:
                example = f'{part}=[1, 0.5] or {part}={{"a": 1}}'
                message = f"{part} must be JSON text in a form ({error.msg}), e.g. {example}"
                raise ApiError(400, message, param=part, code="invalid_type") from None
        else:
            values[name] = items[0]
    return values


def _validated(model: type[Body], values: dict[str, Any], shape: FormShape) -> Body:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise _refusal(error, shape) from None


def _refusal(error: ValidationError, shape: FormShape) -> RequestValidationError:
    """pydantic's complaints as FastAPI's, located in the body and named as the client sent them."""
    problems = []
    for problem in error.errors(include_url=False, include_context=False, include_input=False):
        location = tuple(problem.get("loc", ()))
        if location and isinstance(location[0], str):
            location = (shape.form_name(location[0]), *location[1:])
        problems.append({**problem, "loc": ("body", *location)})
    return RequestValidationError(problems)


def request_body(model: type[BaseModel], shape: FormShape) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads `model` as JSON or as a form (`openapi_extra`)."""
    schema = model.model_json_schema()
    if "$defs" in schema:  # the form's copy would point into the JSON schema's own definitions
        raise ValueError(f"{model.__name__}: a body read as JSON or a form has no nested models")
    form = copy.deepcopy(schema)
    form["title"] = f"{model.__name__}Form"
    properties: dict[str, Any] = {}
    for name, spec in schema.get("properties", {}).items():
        part = shape.form_name(name)
        if name in shape.images:
            binary = {"type": "array", "items": BINARY} if name in shape.lists else dict(BINARY)
            properties[part] = {**binary, "description": spec.get("description", "")}
        elif name in shape.structured:
            described = f"{spec.get('description', '')} In a form: JSON text.".strip()
            properties[part] = {"type": "string", "contentMediaType": JSON_TYPE, "description": described}
        else:
            properties[part] = form["properties"][name]
    form["properties"] = properties
    form["required"] = [shape.form_name(name) for name in schema.get("required", [])]
    return {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": schema_ref(model)},
            "multipart/form-data": {"schema": raw_schema_ref(form["title"], form)},
        },
    }
