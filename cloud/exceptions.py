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
