"""Protobuf and gRPC modules generated from protos/torchserve (TorchServe 0.12.0's API) by `make protos`."""
