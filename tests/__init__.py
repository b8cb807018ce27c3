"""genserve tests."""

import genserve  # noqa: F401  (first: sets gRPC's fork mode before any test module imports grpc)
