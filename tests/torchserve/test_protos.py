"""TorchServe's vendored gRPC API: TorchServe's own method paths, and the same files as its jar."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from genserve.tsapi import inference_pb2, inference_pb2_grpc, management_pb2_grpc

VENDORED = Path(__file__).resolve().parents[2] / "protos" / "torchserve"


def test_the_stubs_call_torchserves_own_services() -> None:
    service = inference_pb2.DESCRIPTOR.services_by_name["InferenceAPIsService"]
    assert service.full_name == "org.pytorch.serve.grpc.inference.InferenceAPIsService"
    assert {"Ping", "Predictions", "StreamPredictions"} <= set(service.methods_by_name)
    assert hasattr(inference_pb2_grpc, "InferenceAPIsServiceStub")
    assert hasattr(management_pb2_grpc, "ManagementAPIsServiceStub")
    # the error field of a streamed response is google.rpc.Status (googleapis-common-protos)
    field = inference_pb2.PredictionResponse.DESCRIPTOR.fields_by_name["status"]
    assert field.message_type.full_name == "google.rpc.Status"


def test_the_vendored_files_are_the_jars() -> None:
    ts = pytest.importorskip("ts", reason="torchserve is not installed (make torchserve)")
    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as archive:
        for inside, here in [
            ("inference.proto", "genserve/tsapi/inference.proto"),
            ("management.proto", "genserve/tsapi/management.proto"),
            ("google/rpc/status.proto", "google/rpc/status.proto"),
        ]:
            assert archive.read(inside) == (VENDORED / here).read_bytes(), here
