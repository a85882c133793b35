"""``manage.py create_api_key NAME [--scope ingest --scope read]``: prints the new key as its last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.choices import ApiScope
from integrations.models import ApiClient


class Command(BaseCommand):
    help = "Issue an API key for a calling system. The key is shown once; only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name of the calling system, e.g. b2c-commerce")
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiScope.values,
            help="Scope to grant (repeatable); default: ingest and read",
        )

    def handle(self, *args: Any, name: str, scope: list[str] | None, **options: Any) -> None:
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(f"An API key named {name!r} exists; revoke it in admin or pick another name.")
        client, key = ApiClient.issue(name, sorted(set(scope or [ApiScope.INGEST, ApiScope.READ])))
        self.stderr.write(f"API key {client.name} ({client.key_prefix}), scopes: {', '.join(client.scopes)}")
        self.stdout.write(key)
