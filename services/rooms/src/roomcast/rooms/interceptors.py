"""The one server interceptor of the Rooms service: maps errors to gRPC status codes
(through :func:`roomcast.rooms.errors.grpc_status_for`, the only mapping) and records
request counts and latency per RPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc

from roomcast.rooms.errors import grpc_status_for
from roomcast.rooms.metrics import GRPC_DURATION, GRPC_REQUESTS
from roomcast.rooms.readonly import current_rpc
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Rooms"].full_name
_PREFIX = f"/{SERVICE_NAME}/"
# The metric label set is bounded by the proto: only these names are ever used.
RPC_NAMES = frozenset(pb.DESCRIPTOR.services_by_name["Rooms"].methods_by_name)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class RoomsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_PREFIX):
            return handler  # health, reflection, unknown methods: untouched
        name = method[len(_PREFIX) :]
        if name not in RPC_NAMES or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _wrap(name, cast(Behavior, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _wrap(name: str, behavior: Behavior) -> Behavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # Each outcome is counted before its status leaves: ``context.abort`` sends the
        # status at once, and a caller that reads /metrics after its reply must find
        # its call already counted.
        start = time.perf_counter()
        current_rpc.set(name)  # the task of this call only: read by the caller check
        try:
            response = await behavior(request, context)
        except asyncio.CancelledError:
            _record(name, grpc.StatusCode.CANCELLED, start)  # client gone or server stops
            raise
        except grpc.aio.AbortError:
            _record(name, context.code() or grpc.StatusCode.UNKNOWN, start)
            raise
        except Exception as exc:
            mapped = grpc_status_for(exc)
            if mapped is None:
                log.exception("unhandled error in %s", name)
                code, message = grpc.StatusCode.INTERNAL, "internal: internal error"
            else:
                code, message = mapped
                if code is grpc.StatusCode.UNAVAILABLE:
                    log.warning("%s: dependency unavailable: %r", name, exc)
            _record(name, code, start)
            await context.abort(code, message)
        _record(name, grpc.StatusCode.OK, start)
        return response

    return wrapped


def _record(name: str, code: grpc.StatusCode, start: float) -> None:
    GRPC_REQUESTS.labels(name, code.name).inc()
    GRPC_DURATION.labels(name).observe(time.perf_counter() - start)
