"""Errors the cloud service raises on purpose; the API maps each to one HTTP status."""

from __future__ import annotations

from shared.exceptions import SmaintError


class CloudError(SmaintError):
    """Base class of the cloud service's errors; ``http_status`` is what the API answers."""

    http_status = 500


class MigrationError(CloudError):
    """The database schema could not be brought up to date."""

    def __init__(self, reason: str, migration: str | None = None) -> None:
        super().__init__(reason if migration is None else f"{migration}: {reason}")
        self.migration = migration


class AuthError(CloudError):
    """A request carried no gateway token, an unknown one or a revoked one (HTTP 401)."""

    http_status = 401


class GatewayNotFoundError(CloudError):
    """An administrative command named a gateway that is not registered."""

    http_status = 404

    def __init__(self, gateway_id: str) -> None:
        super().__init__(f"gateway {gateway_id!r} is not registered")
        self.gateway_id = gateway_id


class ForbiddenGatewayError(CloudError):
    """A gateway's token tried to write as another gateway (HTTP 403)."""

    http_status = 403

    def __init__(self, token_gateway: str, claimed_gateway: str) -> None:
        super().__init__(
            f"token of gateway {token_gateway!r} may not upload for gateway {claimed_gateway!r}"
        )
        self.token_gateway = token_gateway
        self.claimed_gateway = claimed_gateway


class BodyError(CloudError):
    """A request body is unusable: corrupt gzip, unknown encoding (HTTP 400/415)."""

    http_status = 400


class BodyTooLargeError(BodyError):
    """A request body, raw or decompressed, is larger than ``max_body_bytes`` (HTTP 413)."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class UnsupportedEncodingError(BodyError):
    """A request body uses a Content-Encoding other than gzip or identity (HTTP 415)."""

    http_status = 415


class BadCursorError(CloudError):
    """A pagination cursor was not one this service issued (HTTP 400)."""

    http_status = 400


class IngestError(CloudError):
    """A sync batch could not be applied for a reason other than the database being down."""


class InvalidBatchError(IngestError):
    """A batch passed the wire schema but holds values PostgreSQL cannot store (HTTP 422)."""

    http_status = 422


class ForbiddenRoleError(CloudError):
    """A user's role is below what the endpoint requires (HTTP 403)."""

    http_status = 403

    def __init__(self, user: str, role: str, required: str) -> None:
        super().__init__(f"user {user!r} has role {role!r}; this needs {required!r} or above")
        self.user = user
        self.role = role
        self.required = required


class RateLimitedError(CloudError):
    """A principal made more requests in the current window than allowed (HTTP 429)."""

    http_status = 429

    def __init__(self, principal: str, retry_after_s: int) -> None:
        super().__init__(f"rate limit exceeded for {principal}; retry in {retry_after_s} s")
        self.principal = principal
        self.retry_after_s = retry_after_s


class PartitionBudgetError(RateLimitedError):
    """A batch needs more new daily partitions than one upload may create (HTTP 429).

    The first few were made; the retry (Retry-After) makes the next ones.
    """

    def __init__(self, needed: int, made: int) -> None:
        CloudError.__init__(
            self, f"batch needs {needed} new daily partitions, {made} made now "
                  "(ingest.max_new_partitions); retry in 1 s")
        self.principal = "partitions"
        self.retry_after_s = 1


class NotFoundError(CloudError):
    """A user, key, alert or order named by a request does not exist (HTTP 404)."""

    http_status = 404


class ConflictError(CloudError):
    """A change that the entity's current state does not allow (HTTP 409)."""

    http_status = 409


class InvalidTransitionError(ConflictError):
    """A workflow step from a state that does not lead there (HTTP 409)."""

    def __init__(self, entity: str, current: str, wanted: str) -> None:
        super().__init__(f"{entity} is {current!r}; it cannot become {wanted!r}")
        self.entity = entity
        self.current = current
        self.wanted = wanted


class JobError(CloudError):
    """A background job failed in a way worth retrying later (a receiver down, say)."""


class DeliveryError(JobError):
    """A notification could not be delivered to its channel's target."""

    def __init__(self, channel: str, target: str, reason: str) -> None:
        super().__init__(f"{channel} to {target}: {reason}")
        self.channel = channel
        self.target = target
        self.reason = reason
