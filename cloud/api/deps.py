"""What routes share: the app's state (settings, pool, metrics), gateway and user authentication."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from cloud.access import ratelimit
from cloud.access.client_address import Network, client_address
from cloud.access.gateway_tokens import GatewayIdentity, identify
from cloud.access.users import Principal, Role, authenticate_key
from cloud.api.metrics import CloudMetrics
from cloud.exceptions import AuthError, ForbiddenRoleError, RateLimitedError
from cloud.settings import CloudSettings


@dataclass
class AppState:
    """One app's long-lived objects; the pool exists only between start-up and shutdown."""

    settings: CloudSettings
    metrics: CloudMetrics
    pool: ConnectionPool | None = None
    trusted_proxies: list[Network] = field(default_factory=list)

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


def refuse_if_throttled(state: AppState, address: str) -> None:
    """RateLimitedError (429) while ``address`` is over its failed-authentication limit."""
    limit = state.settings.api.auth_failures_per_minute
    if not limit:
        return
    with state.db().connection() as conn, conn.transaction():
        retry = ratelimit.blocked(conn, f"authfail:{address}", limit)
    if retry is not None:
        raise RateLimitedError(f"authfail:{address}", retry)


def count_failure(state: AppState, address: str) -> None:
    """Count one failed authentication from ``address``; RateLimitedError (429) past the limit.

    Gateway tokens, API keys and console passwords share the count: guessing any is bounded.
    """
    limit = state.settings.api.auth_failures_per_minute
    if not limit:
        return
    with state.db().connection() as conn, conn.transaction():
        retry = ratelimit.hit(conn, f"authfail:{address}", limit)
    if retry is not None:
        raise RateLimitedError(f"authfail:{address}", retry)


def require_gateway_identity(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)], pool: Pool
) -> GatewayIdentity:
    """Whom the request's bearer token belongs to; AuthError (401) otherwise, counted per
    client address (429 past the limit)."""
    state, address = get_state(request), client_address_of(request)
    refuse_if_throttled(state, address)
    try:
        if creds is None:
            raise AuthError("missing 'Authorization: Bearer <gateway token>' header")
        with pool.connection() as conn:
            return identify(conn, creds.credentials)
    except AuthError:
        count_failure(state, address)
        raise


def require_gateway(
    identity: Annotated[GatewayIdentity, Depends(require_gateway_identity)]) -> str:
    """The gateway id the request's bearer token belongs to; AuthError (401) otherwise."""
    return identity.gateway_id


GatewayAuth = Annotated[str, Depends(require_gateway)]
GatewayIdentityAuth = Annotated[GatewayIdentity, Depends(require_gateway_identity)]


# User API keys are a separate scheme from gateway tokens: a gateway token opens no user
# endpoint and a user key uploads nothing.
_user_bearer = HTTPBearer(
    auto_error=False, scheme_name="ApiKey",
    description="user API key from `smaint cloud user add` or POST /api/v1/users",
)


def client_address_of(request: Request) -> str:
    """The request's client address (X-Forwarded-For only from a trusted proxy)."""
    state = get_state(request)
    return client_address(request.client.host if request.client else None,
                          request.headers.get("x-forwarded-for"), state.trusted_proxies)


def _authenticate_user(
    state: AppState, creds: HTTPAuthorizationCredentials | None, address: str
) -> Principal:
    limit = state.settings.api.rate_limit_per_minute
    refuse_if_throttled(state, address)
    try:
        with state.db().connection() as conn, conn.transaction():
            if creds is None:
                raise AuthError("missing 'Authorization: Bearer <API key>' header")
            principal = authenticate_key(conn, creds.credentials)
    except AuthError:
        # Failed attempts count per client address, which bounds key guessing.
        count_failure(state, address)
        raise
    with state.db().connection() as conn, conn.transaction():
        retry = ratelimit.hit(conn, f"user:{principal.user_id}", limit) if limit else None
    if retry is not None:
        raise RateLimitedError(f"user {principal.name}", retry)
    return principal


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency: the request's user, if its API key is valid and its role ``role`` or above.

    401 without a valid key, 403 with a lower role, 429 past the rate limit. Protect a router
    with ``APIRouter(..., dependencies=[Depends(require_role("viewer"))])``.
    """

    def dependency(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_bearer)],
    ) -> Principal:
        principal = _authenticate_user(get_state(request), creds, client_address_of(request))
        if not principal.has_role(role):
            raise ForbiddenRoleError(principal.name, principal.role, role)
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Operator = Annotated[Principal, Depends(require_role("operator"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
