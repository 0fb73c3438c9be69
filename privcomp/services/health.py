"""A minimal ``grpc.health.v1.Health`` servicer (layer: services).

Status "" (the whole server) starts SERVING; :meth:`HealthServicer.enter_graceful_shutdown`
sets every status to NOT_SERVING permanently, as the reference implementation does.
"""

from __future__ import annotations

from typing import Any

import grpc

from privcomp.proto.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Health status per service name."""

    def __init__(self) -> None:
        self._status: dict[str, Any] = {"": SERVING}
        self._shutdown = False

    def set(self, service: str, serving: bool) -> None:
        """Set a service's status (ignored after shutdown began)."""
        if not self._shutdown:
            self._status[service] = SERVING if serving else NOT_SERVING

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, permanently."""
        self._shutdown = True
        for k in self._status:
            self._status[k] = NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        """Return the status; unknown service → NOT_FOUND."""
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status or NOT_SERVING)
