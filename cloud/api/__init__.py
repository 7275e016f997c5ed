"""The HTTP API: FastAPI app, middleware and routes."""
