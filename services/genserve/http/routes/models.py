"""GET /v1/models and /v1/models/{model}: the gateway's model catalogue in OpenAI's list format.

Every family is listed (OpenAI clients pick text models by name); `genserve_family` says which
("text", "vision", "latent") and `?family=text` keeps one. `created` is 0: the store records no
date for a model.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from genserve.client import ModelInfo
from genserve.http.calls import Call
from genserve.http.errors import FieldNames, naming

router = APIRouter(tags=["models"])
MODEL_FIELDS = FieldNames({"family": "family", "name": "model"}, not_found="model", not_found_code="model_not_found")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "genserve"
    # genserve's extras
    genserve_family: str
    genserve_version: str
    genserve_architecture: str
    genserve_default: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _model(info: ModelInfo) -> Model:
    return Model(
        id=info.name,
        genserve_family=info.family,
        genserve_version=info.version,
        genserve_architecture=info.architecture,
        genserve_default=info.is_default,
    )


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/v1/models", response_model=ModelList, summary="Every served model (or one family's)")
async def list_models(call: Call, family: str = "") -> Response:
    with naming(MODEL_FIELDS):
        models = await call.client.list_models(family, timeout=call.timeout)
    return _json(ModelList(data=[_model(info) for info in models]))


@router.get("/v1/models/{model}", response_model=Model, summary="One model")
async def retrieve_model(model: str, call: Call) -> Response:
    with naming(MODEL_FIELDS):
        info = await call.client.describe_model(model, timeout=call.timeout)
    return _json(_model(info))
