"""The front door's routes, one module per area; each exposes `router` (a FastAPI APIRouter).

A new area (vision, latent, jobs, a static playground) is a module here with its router added in
`genserve.http.app.ROUTERS`; it calls the gateway through `calls.gateway_call` and reports its
failures through `errors.naming`, so auth, deadlines, disconnects, errors and metrics come with it.
"""
