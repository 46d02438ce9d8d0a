"""Adyen Tokenization webhooks on the real broker: signed ``recurring.token.*`` bodies over HTTP to ingest,
through the processor worker, to the agreement events on payments.status.v1 (each valid against the JSON
Schema), with nothing on payments.dlq.v1; then every published inbox record verifies again as
``replay --reverify`` would check it.

Bodies are Adyen's own examples (tests/fixtures/catalogs/adyen_token_webhook_types.json, from Adyen/adyen-openapi
json/TokenizationNotification-v1.json) with this run's token ids and times.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_pipeline import ACCOUNT, ADYEN_HEX_KEY, Pipeline, running_pipeline, tell_stories, told_events
from processor_harness import read_all

from ingest.providers.adyen.verify import decode_key, sign_body
from ingest.providers.signers import adyen_batch, sign_adyen_item
from paystream.config import AccountConfig, Settings
from processors.recovery.replay_reverify import Reverifier
from schemas.envelopes import InboxEnvelope

pytestmark = pytest.mark.kafka

PATH = f"/webhooks/adyen/{ACCOUNT}"
EXAMPLES: dict[str, dict[str, Any]] = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "catalogs" /
                                                  "adyen_token_webhook_types.json").read_text())["examples"]
# One expected agreement event: (status, previous_status, reason_code, provider_status).
Expected = tuple[str, str | None, str | None, str]


def seen(event: dict[str, Any]) -> Expected:
    data = event["data"]
    return data["status"], data["previous_status"], data["reason_code"], data["provider_status"]


class Token:
    """One stored payment method of a story; each webhook a second later in provider time than the last."""

    def __init__(self, pipe: Pipeline, token: str) -> None:
        self.pipe, self.token = pipe, token
        self.key = f"adyen:{ACCOUNT}:recurring_contract:{token}"
        self.at = time.time() - 600

    def _when(self) -> datetime:
        self.at += 1
        return datetime.fromtimestamp(int(self.at), UTC)

    async def webhook(self, kind: str, events: int | None) -> None:
        """POST Adyen's example of ``kind`` for this token, signed in its header; wait for ``events`` events."""
        example = EXAMPLES[kind]
        body = orjson.dumps({**example, "eventId": f"EV{self.token}", "createdAt": self._when().isoformat(),
                             "data": {**example["data"], "storedPaymentMethodId": self.token}})
        headers = {"content-type": "application/json", "HmacSignature": sign_body(body, decode_key(ADYEN_HEX_KEY))}
        await self.pipe.post_raw(PATH, body, headers)
        if events is not None:
            await self.pipe.wait_events(self.key, events)

    async def recurring_contract(self, events: int) -> None:
        """The standard RECURRING_CONTRACT item for this token (its pspReference is the token, as Adyen's)."""
        item = {"pspReference": self.token, "originalReference": f"PAY{self.token}",
                "merchantAccountCode": "PaystreamTestECOM", "merchantReference": f"order-{self.token}",
                "amount": {"currency": "EUR", "value": 0}, "eventCode": "RECURRING_CONTRACT", "success": "true",
                "eventDate": self._when().isoformat(), "reason": "",
                "additionalData": {"recurring.recurringDetailReference": self.token}}
        body = adyen_batch([sign_adyen_item(item, ADYEN_HEX_KEY)])
        await self.pipe.post_raw(PATH, body, {"content-type": "application/json"})
        await self.pipe.wait_events(self.key, events)


async def created_then_disabled(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    token = Token(pipe, f"TCD{run}")
    await token.webhook("recurring.token.created", 1)
    await token.webhook("recurring.token.disabled", 2)
    return {token.key: [("active", None, "created", "recurring.token.created"),
                        ("closed", "active", "disabled", "recurring.token.disabled")]}


async def every_type_in_turn(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """updated and alreadyExisting keep the agreement active: no event of their own (nothing changed)."""
    token = Token(pipe, f"TAL{run}")
    await token.webhook("recurring.token.created", 1)
    await token.webhook("recurring.token.updated", None)
    await token.webhook("recurring.token.alreadyExisting", None)
    await pipe.settle()
    await token.webhook("recurring.token.disabled", 2)
    return {token.key: [("active", None, "created", "recurring.token.created"),
                        ("closed", "active", "disabled", "recurring.token.disabled")]}


async def contract_then_disabled(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """A RECURRING_CONTRACT notification and a token webhook for one stored payment method: one agreement."""
    token = Token(pipe, f"TRC{run}")
    await token.recurring_contract(1)
    await token.webhook("recurring.token.disabled", 2)
    return {token.key: [("active", None, None, "RECURRING_CONTRACT:true"),
                        ("closed", "active", "disabled", "recurring.token.disabled")]}


STORIES = {"created then disabled": created_then_disabled, "every type in turn": every_type_in_turn,
           "RECURRING_CONTRACT then disabled": contract_then_disabled}


@pytest.fixture(scope="module")
async def pipeline(
    base_settings: Settings, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("adyen-tokens-e2e")) as running:
        yield running


@pytest.fixture(scope="module")
async def told(pipeline: Pipeline) -> dict[str, dict[str, list[Expected]] | BaseException]:
    """Every story, run at once: what each expects (or how it failed)."""
    return await tell_stories(pipeline, STORIES)


@pytest.mark.parametrize("name", list(STORIES))
async def test_story(name: str, told: dict[str, dict[str, list[Expected]] | BaseException],
                     pipeline: Pipeline) -> None:
    for key, events in told_events(pipeline, told, name, seen):
        for event in events:
            assert event["type"] == "agreement.status.changed"
            assert (event["data"]["object_type"], event["subject"]) == ("recurring_contract", key)


async def test_nothing_reaches_the_dlq(told: dict[str, Any], pipeline: Pipeline) -> None:
    assert not [name for name, result in told.items() if isinstance(result, BaseException)]
    settings = pipeline.settings
    inbox = [InboxEnvelope.from_bytes(record.value) for record in await read_all(settings, settings.topics.inbox)]
    tokens = [envelope for envelope in inbox if envelope.delivery_id.startswith("recurring.token.")]
    dlq = await read_all(settings, settings.topics.dlq)
    print(f"\nadyen token webhooks: {len(tokens)} published, payments.dlq.v1: {len(dlq)} records")
    assert len(tokens) == 7  # 2 + 4 + 1 webhooks of the stories, each published once
    assert dlq == [], [(record.key, record.headers) for record in dlq[:5]]


async def test_every_published_delivery_verifies_again(told: dict[str, Any], pipeline: Pipeline,
                                                       tmp_path: Path) -> None:
    """What ``paystream replay --reverify`` checks: the archived bytes and kept header, against current keys."""
    key_file = tmp_path / "adyen-hmac-key"
    key_file.write_text(ADYEN_HEX_KEY)
    accounts = {**pipeline.settings.accounts, "adyen": {ACCOUNT: AccountConfig(secrets=[f"file:{key_file}"])}}
    reverifier = Reverifier(pipeline.settings.model_copy(update={"accounts": accounts}))
    settings = pipeline.settings
    inbox = [InboxEnvelope.from_bytes(record.value) for record in await read_all(settings, settings.topics.inbox)]
    adyen = [envelope for envelope in inbox if envelope.provider == "adyen"]
    verifiers = sorted({(await reverifier.reverify(envelope))["verifier"] for envelope in adyen})
    assert verifiers == ["adyen-hmac", "adyen-hmac-header"]  # the RECURRING_CONTRACT item and the tokens
