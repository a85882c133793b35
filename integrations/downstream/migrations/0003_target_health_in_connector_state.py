"""A target's health moves to the one circuit breaker's table: ``ConnectorState`` row ``target:<id>``.

A paused target becomes an open breaker until the same time, opened as often as its pauses had
doubled (``times_opened``), so the next pause lasts what it would have; its failures in a row, last
error and last success carry over. Going back copies them onto the target again.
"""

import datetime as dt

from django.db import migrations

PAUSE_AFTER_FAILURES = 5
PAUSE_BASE_SECONDS = 10.0
PAUSE_MAX_SECONDS = 600.0


def to_connector_state(apps, schema_editor):
    DownstreamTarget = apps.get_model("downstream", "DownstreamTarget")
    ConnectorState = apps.get_model("integrations", "ConnectorState")
    for target in DownstreamTarget.objects.all():
        if not (target.paused_until or target.consecutive_failures or target.last_error or target.last_success_at):
            continue
        state = {
            "consecutive_failures": target.consecutive_failures,
            "last_error": target.last_error,
            "last_success_at": target.last_success_at,
            "breaker_state": "closed",
            "opened_at": None,
            "open_until": None,
            "times_opened": 0,
        }
        if target.paused_until:
            # The old pause was 10 s * 2 ** (failures - 5): the breaker's cooldown after that many openings.
            times_opened = max(1, target.consecutive_failures - PAUSE_AFTER_FAILURES + 1)
            cooldown = min(PAUSE_MAX_SECONDS, PAUSE_BASE_SECONDS * 2 ** (times_opened - 1))
            state.update(
                breaker_state="open",
                open_until=target.paused_until,
                opened_at=target.paused_until - dt.timedelta(seconds=cooldown),
                times_opened=times_opened,
            )
        ConnectorState.objects.update_or_create(system=f"target:{target.pk}", defaults=state)


def to_target(apps, schema_editor):
    DownstreamTarget = apps.get_model("downstream", "DownstreamTarget")
    ConnectorState = apps.get_model("integrations", "ConnectorState")
    for state in ConnectorState.objects.filter(system__startswith="target:"):
        held = state.breaker_state != "closed"
        DownstreamTarget.objects.filter(pk=int(state.system.removeprefix("target:"))).update(
            paused_until=state.open_until if held else None,
            pause_reason=(
                f"{state.consecutive_failures} failures in a row; last: {state.last_error[:300]}" if held else ""
            ),
            consecutive_failures=state.consecutive_failures,
            last_error=state.last_error,
            last_success_at=state.last_success_at,
        )
        state.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("downstream", "0002_delivery_answer_size_target_url_checks"),
        ("integrations", "0015_dead_letter_error_detail"),
    ]

    operations = [
        migrations.RunPython(to_connector_state, to_target),
        migrations.RemoveField(model_name="downstreamtarget", name="consecutive_failures"),
        migrations.RemoveField(model_name="downstreamtarget", name="last_error"),
        migrations.RemoveField(model_name="downstreamtarget", name="last_success_at"),
        migrations.RemoveField(model_name="downstreamtarget", name="pause_reason"),
        migrations.RemoveField(model_name="downstreamtarget", name="paused_until"),
    ]
