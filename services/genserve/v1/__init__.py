"""Protobuf and gRPC modules generated from protos/genserve/v1 by `make protos`."""
