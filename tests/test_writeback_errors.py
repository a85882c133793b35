"""Write-back failures as Marketing Cloud returns them, through the sandbox over real HTTP."""

from __future__ import annotations

import pytest
from django.utils import timezone

from customers.models import CrossReference, Individual
from integrations.choices import EventStatus, RunStatus
from integrations.models import DeadLetter, InboundEvent, SyncRun
from integrations.replay import replay_dead_letter
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def _process_until_writeback(journey) -> SyncRun:
    journey.execute(subscriber())
    run_queued(include_delayed=False, limit=1)  # process_event only
    return SyncRun.objects.get()


def test_429_is_retried_later_honouring_retry_after_then_succeeds(journey, sandbox):
    sandbox.inject("429", retry_after=7)
    run = _process_until_writeback(journey)
    before = timezone.now()
    run_queued(include_delayed=False, limit=1)  # first attempt: throttled
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING and run.writeback_attempts == 1
    [task] = queued_tasks()
    assert task["func"] == "integrations.marketing_cloud.writeback.flush_writebacks"
    # The retry is not visible to workers before Retry-After has passed: nobody sleeps.
    assert (task["row"].lock - before).total_seconds() >= 7
    assert run_queued(include_delayed=False) == []

    run_queued()  # the delayed retry
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.writeback_attempts == 2
    retry_step = run.steps.get(outcome="retry")
    assert retry_step.data["httpStatus"] == 429 and retry_step.data["errorCode"] == "50100"
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id
    assert InboundEvent.objects.get().status == EventStatus.SYNCED


def test_blocked_429_without_header_backs_off_longer(journey, sandbox):
    sandbox.inject("429-blocked")
    run = _process_until_writeback(journey)
    run_queued(include_delayed=False, limit=1)
    run.refresh_from_db()
    assert (run.next_attempt_at - timezone.now()).total_seconds() > 50
    run_queued()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("kind", ["500", "503", "reset", "timeout"])
def test_server_errors_resets_and_timeouts_are_retried_then_succeed(journey, sandbox, settings, kind):
    settings.MC_HTTP_TIMEOUT = 0.5
    sandbox.inject(kind, count=2, delay=2.0)
    _process_until_writeback(journey)
    run_queued()
    run = SyncRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.writeback_attempts == 3
    assert list(run.steps.filter(name="write back master ID").values_list("outcome", flat=True)) == [
        "ok",
        "retry",
        "retry",
        "ok",
    ]
    assert CrossReference.objects.get().writeback_state == "written"


def test_expired_token_is_refreshed_once_and_the_call_repeated(journey, sandbox):
    _process_until_writeback(journey)
    run_queued()
    assert sandbox.count("POST", "/v2/token") == 1
    sandbox.expire_tokens()
    journey.execute(subscriber(key="SK-3003", email="grace@example.com"))
    run_queued()
    assert sandbox.count("POST", "/v2/token") == 2
    assert SyncRun.objects.filter(status=RunStatus.SUCCEEDED).count() == 2


def test_token_is_cached_across_calls(journey, sandbox):
    for i in range(3):
        journey.execute(subscriber(key=f"SK-{i}", email=f"person{i}@example.com"))
        run_queued()
    assert len(sandbox.rows("Individual")) == 3
    # At least one write per subscriber (a loaded machine may time out and write again); one token for all.
    assert sandbox.count("PUT", "/hub/v1/dataevents") >= 3
    assert sandbox.count("POST", "/v2/token") == 1


@pytest.mark.parametrize(("kind", "status", "code"), [("400", 400, "10005"), ("403", 403, "20000")])
def test_permanent_errors_end_in_the_dead_letter_list_and_can_be_replayed(journey, sandbox, kind, status, code):
    sandbox.inject(kind)
    _process_until_writeback(journey)
    run_queued()
    run = SyncRun.objects.get()
    assert run.status == RunStatus.DEAD and run.writeback_attempts == 1
    dead = DeadLetter.objects.get()
    assert (dead.stage, dead.http_status, dead.error_code) == ("writeback", status, code)
    assert dead.original_event["externalId"] == "SK-1001" and dead.original_event["rawBodyBase64"]
    xref = CrossReference.objects.get()
    assert xref.writeback_state == "failed" and xref.writeback_error
    assert InboundEvent.objects.get().status == EventStatus.DEAD
    assert "SK-1001" not in sandbox.rows("Individual")

    replay_run = replay_dead_letter(dead, actor="user:test")
    run_queued()
    replay_run.refresh_from_db()
    assert replay_run.status == RunStatus.SUCCEEDED
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id
    assert InboundEvent.objects.get().status == EventStatus.SYNCED
    assert CrossReference.objects.get().writeback_state == "written"
    # A second replay of the same dead letter does nothing new.
    assert replay_dead_letter(dead, actor="user:test") == replay_run
    assert queued_tasks() == []


def test_retries_are_bounded_then_dead_lettered(journey, sandbox, settings):
    settings.WRITEBACK_MAX_ATTEMPTS = 3
    sandbox.inject("500", count=10)
    _process_until_writeback(journey)
    run_queued()
    run = SyncRun.objects.get()
    assert run.status == RunStatus.DEAD and run.writeback_attempts == 3
    assert "gave up after 3 attempts" in DeadLetter.objects.get().reason


def test_bad_credentials_are_a_permanent_failure(journey, sandbox, settings):
    settings.MC_CLIENT_SECRET = "wrong"
    _process_until_writeback(journey)
    run_queued()
    dead = DeadLetter.objects.get()
    assert dead.http_status == 401 and "token request refused" in dead.reason


def test_a_401_that_survives_a_fresh_token_is_permanent(journey, sandbox):
    sandbox.inject("401", count=2)
    _process_until_writeback(journey)
    run_queued()
    dead = DeadLetter.objects.get()
    assert dead.http_status == 401 and dead.error_code == "0"
    assert sandbox.count("POST", "/v2/token") == 2  # one refresh, not a loop


# The sandbox's data extension is declared as the tenant's is: a wrong setting fails here as it
# would in production, where the lax emulator used to accept anything.


def test_a_wrong_master_id_field_is_dead_lettered_with_marketing_clouds_additional_errors(journey, sandbox, settings):
    settings.MC_MASTER_ID_FIELD = "MasterId"
    _process_until_writeback(journey)
    run_queued()
    dead = DeadLetter.objects.get()
    assert (dead.stage, dead.http_status, dead.error_code) == ("writeback", 400, "10006")
    assert dead.error_detail["errorcode"] == 10006
    assert dead.error_detail["message"].startswith("Unable to save rows for data extension ID ")
    assert dead.error_detail["additionalErrors"] == [
        {"message": "MasterId: The column [MasterId] does not exist in the data extension.", "errorcode": 10000}
    ]
    assert "MasterId: The column [MasterId] does not exist" in dead.reason
    step = SyncRun.objects.get().steps.get(outcome="failed")
    assert step.data["additionalErrors"] == dead.error_detail["additionalErrors"]
    assert sandbox.rows("Individual") == {}


def test_a_wrong_data_extension_key_is_dead_lettered(journey, sandbox, settings):
    settings.MC_DE_KEY = "Individuals"
    _process_until_writeback(journey)
    run_queued()
    dead = DeadLetter.objects.get()
    assert (dead.http_status, dead.error_code) == (400, "10000")
    assert dead.error_detail == {
        "message": "Data extension with external key 'Individuals' was not found.",
        "errorcode": 10000,
    }
    assert SyncRun.objects.get().status == RunStatus.DEAD


@pytest.mark.django_db
def test_a_batch_with_a_wrong_field_dead_letters_every_row_with_its_causes(sandbox, settings):
    from integrations.choices import MARKETING_CLOUD
    from integrations.intake import AcceptedEvent, store_events
    from integrations.marketing_cloud.mapping import subscriber_to_cim

    settings.MC_MASTER_ID_FIELD = "GlobalPartyID "  # a trailing space, as pasted from a spreadsheet
    for i in range(3):
        args = subscriber(key=f"SK-{i}", email=f"p{i}@example.com")
        store_events(
            [
                AcceptedEvent(
                    channel="mc_journey",
                    system=MARKETING_CLOUD,
                    external_id=args["SubscriberKey"],
                    idempotency_key=f"k-{i}",
                    raw_body=b"{}",
                    headers={},
                    content_type="application/jwt",
                    payload={},
                    individual_cim=subscriber_to_cim(args),
                )
            ]
        )
    run_queued()
    # The rowset failed as a whole; each row was then sent alone and refused with its own cause.
    assert sandbox.count("POST", "/hub/v1/dataevents/key:Individual/rowset") >= 1
    letters = list(DeadLetter.objects.all())
    assert len(letters) == 3
    assert all(
        letter.error_detail["additionalErrors"][0]["message"].startswith("GlobalPartyID :") for letter in letters
    )
