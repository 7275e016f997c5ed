"""Console sign-in with a user name and password: ``POST /api/v1/sessions`` issues a session
key (an API key that expires after SMAINT_CLOUD_CONSOLE__SESSION_HOURS), ``DELETE
/api/v1/sessions/current`` revokes it. Failed sign-ins are throttled per user and per address."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from cloud.access import passwords, ratelimit
from cloud.access.users import USER_NAME_PATTERN, Role, revoke_key
from cloud.api.deps import (
    Admin,
    Pool,
    Viewer,
    client_address_of,
    count_failure,
    get_state,
    refuse_if_throttled,
)
from cloud.api.routes.alerts import DENIED
from cloud.exceptions import AuthError, ConflictError, RateLimitedError

router = APIRouter(prefix="/api/v1", tags=["users"])


class Credentials(BaseModel):
    """A user's name and console password."""

    model_config = {"extra": "forbid"}

    name: str = Field(max_length=64)
    password: str = Field(max_length=passwords.MAX_PASSWORD)


class NewPassword(BaseModel):
    """A console password to set."""

    model_config = {"extra": "forbid"}

    password: str = Field(min_length=passwords.MIN_PASSWORD, max_length=passwords.MAX_PASSWORD)


class SessionKey(BaseModel):
    """A signed-in session: an API key that ends by itself."""

    user: str
    role: Role
    key_id: int
    key: str = Field(description="send as `Authorization: Bearer <key>` until expires_at")
    expires_at: datetime


def _sign_in(request: Request, body: Credentials) -> SessionKey:
    state = get_state(request)
    address = client_address_of(request)
    limit = state.settings.api.auth_failures_per_minute
    user_key = f"loginfail:{body.name}"
    refuse_if_throttled(state, address)
    if limit:
        with state.db().connection() as conn, conn.transaction():
            retry = ratelimit.blocked(conn, user_key, limit)
        if retry is not None:
            raise RateLimitedError(f"sign-ins of user {body.name}", retry)
    lifetime_s = state.settings.console.session_hours * 3600
    try:
        with state.db().connection() as conn:
            issued = passwords.sign_in(conn, body.name, body.password, lifetime_s)
            row = conn.execute("SELECT expires_at FROM api_keys WHERE key_id = %s",
                               (issued.key_id,)).fetchone()
    except AuthError:
        retry = None
        if limit:
            with state.db().connection() as conn, conn.transaction():
                retry = ratelimit.hit(conn, user_key, limit)
        count_failure(state, address)
        if retry is not None:
            raise RateLimitedError(f"sign-ins of user {body.name}", retry) from None
        raise
    assert row is not None  # noqa: S101 - the key was just inserted
    return SessionKey(user=issued.user, role=issued.role, key_id=issued.key_id, key=issued.key,
                      expires_at=row[0])


@router.post("/sessions", response_model=SessionKey, status_code=201,
             summary="Sign in with name and password",
             responses={401: {"description": "wrong user name or password"},
                        429: {"description": "too many failed sign-ins (per user or address)"}})
async def post_session(request: Request, body: Credentials) -> SessionKey:
    """A session key valid for the console's session length (argon2 check off the loop)."""
    return await run_in_threadpool(_sign_in, request, body)


@router.delete("/sessions/current", status_code=204, response_class=Response,
               summary="Sign out", responses={**DENIED, 409: {"description": "not a session"}})
def delete_session(pool: Pool, who: Viewer) -> Response:
    """Revoke the session key this request carries (never a permanent API key)."""
    with pool.connection() as conn:
        row = conn.execute("SELECT expires_at FROM api_keys WHERE key_id = %s",
                           (who.key_id,)).fetchone()
        if row is None or row[0] is None:
            raise ConflictError("this is a permanent API key, not a sign-in session; revoke "
                                "it with DELETE /api/v1/users/<name>/keys/<key_id>")
        revoke_key(conn, who.name, who.key_id, actor=who.name)
    return Response(status_code=204)


@router.put("/users/{name}/password", status_code=204, response_class=Response,
            summary="Set a user's console password",
            responses={**DENIED, 404: {"description": "no such user"}})
def put_password(
    pool: Pool, who: Admin,
    name: Annotated[str, Path(pattern=USER_NAME_PATTERN)], body: NewPassword,
) -> Response:
    """Set or replace the password the user signs in to the console with (argon2id)."""
    with pool.connection() as conn:
        passwords.set_password(conn, name, body.password, actor=who.name)
    return Response(status_code=204)
