"""The HTTP front door: OpenAI-compatible completions with SSE streaming, in front of the gateway.

A client of the gateway through `genserve.client.AsyncClient` (one channel, each request's API
key passed through), so it holds no model and adds no second copy of validation: parameters go to
the gRPC API and its messages come back as OpenAI-style errors. Modules: `app` (the application
factory), `role` (`genserve serve http`), `calls` (per-request key and deadline), `auth`, `errors`
(the one status table), `disconnect` (a client that leaves cancels its call), `sse`, `limits`,
`metrics`, `completion_schema` (OpenAI's format) and `routes/` (one module per area).
"""
