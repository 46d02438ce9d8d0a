"""SNS subscription control messages (Amazon Pay IPN transport).

A verified ``SubscriptionConfirmation`` for an allowed topic is confirmed by fetching its validated
``SubscribeURL``; the verifier already refused every other topic. ``UnsubscribeConfirmation`` is logged
and not acted on: resubscribing is an operator's decision.
"""

from __future__ import annotations

import aiohttp

from ingest.delivery import IncomingDelivery, VerifiedDelivery
from ingest.providers.amazon_pay.sns import confirm_subscription
from paystream import metrics
from paystream.errors import InfrastructureError
from paystream.logs import get_logger

log = get_logger(__name__)


class SubscriptionHandler:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, delivery: IncomingDelivery, verified: VerifiedDelivery) -> None:
        action = verified.control.get("action")
        if action == "confirm_subscription":
            try:
                await confirm_subscription(verified.control["subscribe_url"], self._client(), timeout_s=self._timeout_s)
            except InfrastructureError:
                metrics.SNS_SUBSCRIPTIONS.labels(outcome="failed").inc()
                raise
            metrics.SNS_SUBSCRIPTIONS.labels(outcome="confirmed").inc()
            log.info("sns_subscription_confirmed", topic_arn=verified.object_ids.get("topic_arn"),
                     message_id=verified.delivery_id)
        else:
            log.warning("sns_control_message", action=action, message_id=verified.delivery_id,
                        topic_arn=verified.object_ids.get("topic_arn"))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
