"""What routes share: the app's state (settings, pool, metrics) and gateway authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from cloud.api.metrics import CloudMetrics
from cloud.auth import authenticate
from cloud.exceptions import AuthError
from cloud.settings import CloudSettings


@dataclass
class AppState:
    """One app's long-lived objects; the pool exists only between start-up and shutdown."""

    settings: CloudSettings
    metrics: CloudMetrics
    pool: ConnectionPool | None = None

    def db(self) -> ConnectionPool:
        """The open pool; RuntimeError outside the app's lifespan."""
        if self.pool is None:
            raise RuntimeError("the database pool is not open (app not started)")
        return self.pool


def get_state(request: Request) -> AppState:
    """The AppState that create_app attached to the application."""
    return cast(AppState, request.app.state.cloud)


def get_pool(request: Request) -> ConnectionPool:
    """The open connection pool."""
    return get_state(request).db()


State = Annotated[AppState, Depends(get_state)]
Pool = Annotated[ConnectionPool, Depends(get_pool)]

# auto_error=False: a missing or non-Bearer header must be our 401, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="gateway token from `smaint cloud gateway add`")


def require_gateway(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)], pool: Pool
) -> str:
    """The gateway id the request's bearer token belongs to; AuthError (401) otherwise."""
    if creds is None:
        raise AuthError("missing 'Authorization: Bearer <gateway token>' header")
    with pool.connection() as conn:
        return authenticate(conn, creds.credentials)


GatewayAuth = Annotated[str, Depends(require_gateway)]
