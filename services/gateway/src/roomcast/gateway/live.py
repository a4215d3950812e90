"""The gateway's NATS side, built in one go once NATS is connected and the stream exists.

Everything here needs NATS, so none of it exists before: :meth:`Live.start` builds the
fan-out, read receipts, presence (with typing), edits and deletes, the reactions to
rooms' and auth's events and the membership revalidator, wires them to each other and
hands the sockets their collaborators (:class:`SocketServices`). Until it returns the
gateway is not ready (/readyz and handshakes answer 503), so no object carries a
"not started yet" state.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client as NatsClient

from roomcast.common.membership import MembershipCache
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.subjects import ROOM_EVENTS_PREFIX, USER_EVENTS_PREFIX
from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.ephemeral.presence import Presence
from roomcast.gateway.ephemeral.presence_wire import new_gateway_id
from roomcast.gateway.ephemeral.receipts import ReadReceipts
from roomcast.gateway.realtime.changes import ChangePublisher
from roomcast.gateway.realtime.connection import SocketServices
from roomcast.gateway.realtime.drain import Drain
from roomcast.gateway.realtime.events import EventRouter
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.realtime.fileshares import FileShares
from roomcast.gateway.realtime.mentions import MentionResolver
from roomcast.gateway.realtime.moderation import PostingRules
from roomcast.gateway.realtime.recipients import RecipientCache
from roomcast.gateway.realtime.revalidation import MembershipRevalidator
from roomcast.gateway.realtime.slowmode import SlowMode
from roomcast.gateway.realtime.sockets import SocketRegistry
from roomcast.gateway.realtime.stream import ChatStream
from roomcast.gateway.settings import Settings


class Live:
    def __init__(
        self,
        *,
        nc: NatsClient,
        fanout: Fanout,
        presence: Presence,
        receipts: ReadReceipts,
        revalidator: MembershipRevalidator,
        services: SocketServices,
    ) -> None:
        self.nc = nc
        self.fanout = fanout
        self.presence = presence
        self.receipts = receipts
        self.revalidator = revalidator
        self.services = services
        # Live subscriptions re-checked periodically (missed events): revalidation.py.
        self._revalidate_task = asyncio.create_task(revalidator.run(), name="gateway-revalidate")

    @classmethod
    async def start(
        cls,
        nc: NatsClient,
        stream: ChatStream,
        *,
        settings: Settings,
        verifier: TokenVerifier,
        membership: MembershipCache,
        recipients: RecipientCache,
        sockets: SocketRegistry,
        drain: Drain,
        revoked: RevocationWatcher,
    ) -> Live:
        """Build the NATS side, subscribe to the event subjects, start presence and the
        revocation list's watch."""
        fanout = Fanout(
            nc,
            stream,
            max_replay=settings.max_replay_messages,
            max_buffered=settings.max_catchup_buffer_messages,
        )
        gateway_id = new_gateway_id(settings.instance_name)
        receipts = ReadReceipts(
            history_url=settings.history_url,
            gateway_id=gateway_id,
            nc=nc,
            membership=membership,
            fanout=fanout,
        )
        presence = Presence(nc, settings, gateway_id=gateway_id, fanout=fanout, receipts=receipts)
        events = EventRouter(
            caches=(membership, recipients),
            fanout=fanout,
            presence=presence,
            sockets=sockets,
            revoked=revoked,
        )
        await nc.subscribe(ROOM_EVENTS_PREFIX + "*", cb=events.on_room_event)
        await nc.subscribe(USER_EVENTS_PREFIX + "*", cb=events.on_user_event)
        await nc.flush()
        await presence.start()
        revoked.attach(nc)
        revalidator = MembershipRevalidator(
            membership=membership,
            recipients=recipients,
            sockets=sockets,
            fanout=fanout,
            presence=presence,
            interval=settings.membership_revalidate_interval_seconds,
        )
        # Mutes and slow mode on the socket path; the pace is shared through NATS
        # key-value with the CHAT stream's replica count (moderation.py, slowmode.py).
        moderation = PostingRules(
            membership,
            SlowMode(nc, replicas=settings.stream_replicas),
            membership.client.stub,
        )
        services = SocketServices(
            settings=settings,
            sockets=sockets,
            drain=drain,
            verifier=verifier,
            membership=membership,
            recipients=recipients,
            stream=stream,
            rooms=fanout,
            presence=presence,
            receipts=receipts,
            changes=ChangePublisher(
                stream, membership, drain, on_moderator_delete=moderation.record_deletion
            ),
            moderation=moderation,
            files=FileShares(settings.history_url),
            mentions=MentionResolver(settings.auth_url, recipients),
        )
        return cls(
            nc=nc,
            fanout=fanout,
            presence=presence,
            receipts=receipts,
            revalidator=revalidator,
            services=services,
        )

    def on_reconnected(self) -> None:
        """After a NATS reconnect: core-NATS events and live messages published while
        disconnected are lost. Re-check memberships, resend presence, repair rooms."""
        self.revalidator.on_reconnected()
        self.presence.on_reconnected()
        self.fanout.resync_all()

    async def close(self) -> None:
        """Stop the background work (after presence's goodbye and the sockets' close)."""
        self._revalidate_task.cancel()
        with contextlib.suppress(BaseException):
            await self._revalidate_task
        await self.revalidator.close()
        await self.fanout.close()
        with contextlib.suppress(Exception):
            await self.receipts.aclose()
        if isinstance(self.services.mentions, MentionResolver):
            with contextlib.suppress(Exception):
                await self.services.mentions.aclose()
        if isinstance(self.services.files, FileShares):
            with contextlib.suppress(Exception):
                await self.services.files.aclose()
