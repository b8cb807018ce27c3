"""Client-side balancing over a service's replicas: the gateway's channels to its backends, and the
http role's channel to the gateways.

An address may name several replicas: a comma-separated list (`127.0.0.1:50061,127.0.0.1:50071`)
or a name that resolves to all of them (`dns:///text-headless.genserve.svc.cluster.local:50061`
behind a headless Service). Calls are spread over them by gRPC's round_robin policy, per call,
not per connection; a replica whose health check says NOT_SERVING (loading, or draining after
SIGTERM) gets no new calls; DNS names are resolved again as pods come and go.
"""

from __future__ import annotations

import json

# Round-robin over every resolved replica, each watched with the standard health service ("" = the
# whole server, which a genserve server reports NOT_SERVING while loading and while draining).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})
BALANCING_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),  # finds a replica that vanished without closing its connections
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),  # re-resolution as pods come and go
]


def channel_target(address: str) -> str:
    """A gRPC target for `address`: a comma-separated list of host:port becomes one ipv4: target."""
    if "," in address and "://" not in address and not address.startswith(("ipv4:", "ipv6:")):
        return "ipv4:" + ",".join(part.strip() for part in address.split(",") if part.strip())
    return address
