"""User management (admin): users, roles, API keys, and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from cloud.access.users import (
    USER_NAME_PATTERN,
    IssuedKey,
    Role,
    User,
    create_user,
    issue_key,
    list_users,
    revoke_key,
    set_role,
)
from cloud.api.deps import Admin, Pool, Viewer
from cloud.api.routes.alerts import DENIED
from cloud.operations import audit
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["users"])

UserName = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="user name")]


class NewUser(BaseModel):
    """A user to create; the answer carries its first API key."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"name": "alice", "role": "operator"}]}}

    name: str = Field(pattern=USER_NAME_PATTERN)
    role: Role = Field(description="viewer < operator < admin")


class RoleChange(BaseModel):
    """A user's new role."""

    model_config = {"extra": "forbid"}

    role: Role


class Me(BaseModel):
    """Who the API key belongs to."""

    name: str
    role: Role
    key_id: int


@router.get("/me", response_model=Me, summary="Who am I", responses=DENIED)
def get_me(who: Viewer) -> Me:
    """The user and role of the request's API key."""
    return Me(name=who.name, role=who.role, key_id=who.key_id)


@router.get("/users", response_model=list[User], summary="Users and their keys",
            responses=DENIED)
def get_users(pool: Pool, _: Admin) -> list[User]:
    """Every user with its role and keys (never the keys themselves)."""
    with pool.connection() as conn:
        return list_users(conn)


@router.post("/users", response_model=IssuedKey, status_code=201, summary="Create a user",
             responses={**DENIED, 409: {"description": "the name is taken"}})
def post_user(pool: Pool, who: Admin, body: NewUser) -> IssuedKey:
    """Create a user; the answer shows its first API key, once."""
    with pool.connection() as conn:
        return create_user(conn, body.name, body.role, actor=who.name)


@router.patch("/users/{name}", response_model=User, summary="Change a user's role",
              responses={**DENIED, 404: {"description": "no such user"}})
def patch_user(pool: Pool, who: Admin, name: UserName, body: RoleChange) -> User:
    """Set the role; effective on the user's next request."""
    with pool.connection() as conn:
        set_role(conn, name, body.role, actor=who.name)
        return next(u for u in list_users(conn) if u.name == name)


@router.post("/users/{name}/keys", response_model=IssuedKey, status_code=201,
             summary="Issue another API key", responses={**DENIED, 404: {"description": "no user"}})
def post_key(pool: Pool, who: Admin, name: UserName) -> IssuedKey:
    """A new key for the user (rotation: issue, switch over, revoke the old one)."""
    with pool.connection() as conn:
        return issue_key(conn, name, actor=who.name)


@router.delete("/users/{name}/keys/{key_id}", status_code=204, response_class=Response,
               summary="Revoke an API key", responses={**DENIED, 404: {"description": "no key"}})
def delete_key(
    pool: Pool, who: Admin, name: UserName,
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> Response:
    """Requests with the key get 401 from now on."""
    with pool.connection() as conn:
        revoke_key(conn, name, key_id, actor=who.name)
    return Response(status_code=204)


@router.get("/audit", response_model=list[audit.AuditEntry], summary="The audit log",
            responses=DENIED)
def get_audit(
    pool: Pool,
    _: Admin,
    entity: Annotated[str | None, Query(max_length=50, examples=["alert"])] = None,
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    device: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_ENTRIES)] = 100,
) -> list[audit.AuditEntry]:
    """The newest ``limit`` entries matching the filters, oldest first."""
    with pool.connection() as conn:
        return audit.entries(conn, entity=entity, entity_id=entity_id, device=device, limit=limit)
