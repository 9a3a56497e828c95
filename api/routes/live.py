"""The live stream for control-room screens: alert transitions and device status changes (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterable

from fastapi import APIRouter
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import CommunityQuery, CurrentUser, StateDep, community_filter

router = APIRouter(prefix="/api/v1", tags=["live"])


@router.get("/live", response_class=EventSourceResponse)
async def live(
    principal: CurrentUser, state: StateDep, community: CommunityQuery = None
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: ``alert`` (the alerts service's event) and ``status`` (a device's).

    A grid worker gets only their grids'. Keep-alive comments flow while it is quiet.
    """
    subscriber = state.live.subscribe(principal, community_filter(principal, community))
    state.metrics.live_streams.inc()
    try:
        while True:
            event = await subscriber.queue.get()
            if event is None:
                yield ServerSentEvent(event="overflow", data={"reason": "fell behind; reconnect"})
                return
            yield ServerSentEvent(event=event.type, data=event.data)
    finally:
        state.live.unsubscribe(subscriber)
        state.metrics.live_streams.dec()
