"""``GET /v1/rooms/{id}/messages``: a page of history, relayed to the history service.

The token is verified here first (401 without a hop); history verifies it again and
checks membership with rooms. ``before`` and ``limit`` are validated here and sent as
canonical integers; history's answer (``{items, next_before}`` or its error) is
relayed unchanged.

``GET /v1/rooms/{id}/messages/{seq}/replies``: the thread of message ``seq`` (its
replies the caller may see, newest first), relayed the same way; history answers 404
when ``seq`` is not a message of the room.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Auth``
# alias (a closure variable) in the signatures, not a string it cannot resolve.

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from roomcast.gateway.rest.deps import Caller, RestDeps, caller_dependency
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_SEQ, MessagePage
from roomcast.gateway.rest.rooms import room_id_of
from roomcast.gateway.rest.upstream import forward


def create_messages_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["messages"])
    Auth = Annotated[Caller, caller_dependency(deps.verifier)]

    async def history_page(request: Request, path: str, before: int | None, limit: int) -> Response:
        """One page of history's ``path`` (checked ``before`` and ``limit``), relayed."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        return await forward(
            request,
            deps.http,
            "history",
            f"{deps.history_url}{path}",
            time_limit=deps.history_timeout,
            trusted=deps.trusted_proxies,
            params=params,
        )

    @router.get(
        "/v1/rooms/{room_id}/messages",
        response_model=MessagePage,
        responses=errors(400, 401, 403, 404, 503),
        summary="Messages of a room the caller is in, newest first",
    )
    async def list_messages(
        room_id: str,
        request: Request,
        caller: Auth,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="only messages with seq < before")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")] = (
            DEFAULT_PAGE_SIZE
        ),
    ) -> Response:
        return await history_page(
            request, f"/v1/rooms/{room_id_of(room_id)}/messages", before, limit
        )

    @router.get(
        "/v1/rooms/{room_id}/messages/{seq}/replies",
        response_model=MessagePage,
        responses=errors(400, 401, 403, 404, 503),
        summary="The thread of a message: its replies the caller sees, newest first",
    )
    async def list_replies(
        room_id: str,
        seq: Annotated[int, Path(ge=1, le=MAX_SEQ, description="the parent message's seq")],
        request: Request,
        caller: Auth,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="only replies with seq < before")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")] = (
            DEFAULT_PAGE_SIZE
        ),
    ) -> Response:
        path = f"/v1/rooms/{room_id_of(room_id)}/messages/{seq}/replies"
        return await history_page(request, path, before, limit)

    return router
