"""genserve: model-serving microservices for generative deep learning."""

import os

# Before anything imports grpc: its fork handlers, run in a child forked while another thread is
# in a gRPC call, can abort that child before it execs (about 1 start in 300 under load). Our
# processes never fork to go on running gRPC: they fork only to exec `genserve serve ...`.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
