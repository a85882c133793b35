"""``manage.py create_api_key NAME [--scope ingest --scope read] [--source POS ...]``: prints the new key last."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.choices import ApiScope
from integrations.models import ApiClient


class Command(BaseCommand):
    help = (
        "Issue an API key for a calling system. The key is shown once; only its hash is stored. "
        "An ingest key is bound to the source systems it may send events for (--source, repeatable)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name of the calling system, e.g. b2c-commerce")
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiScope.values,
            help="Scope to grant (repeatable); default: ingest and read",
        )
        parser.add_argument(
            "--source",
            action="append",
            default=[],
            metavar="SYSTEM",
            help="Source system the key may send events for, e.g. POS (repeatable; needed with the ingest scope)",
        )

    def handle(self, *args: Any, name: str, scope: list[str] | None, source: list[str], **options: Any) -> None:
        scopes = sorted(set(scope or [ApiScope.INGEST, ApiScope.READ]))
        if ApiScope.INGEST in scopes and not source:
            raise CommandError("An ingest key needs at least one --source (the systems it may send events for).")
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(f"An API key named {name!r} exists; revoke it in admin or pick another name.")
        try:
            client, key = ApiClient.issue(name, scopes, source)
        except ValidationError as exc:
            raise CommandError(f"--source: {'; '.join(exc.messages)}") from None
        self.stderr.write(
            f"API key {client.name} ({client.key_prefix}), scopes: {', '.join(client.scopes)}"
            + (f", sources: {', '.join(client.sources)}" if client.sources else "")
        )
        self.stdout.write(key)
