#!/usr/bin/env python
"""Django's command-line utility for the customer hub."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        # Loading the settings is where the hub refuses a configuration it cannot run (no secret key,
        # no database outside development): say which in one line instead of a traceback.
        settings.INSTALLED_APPS  # noqa: B018 - read for its side effect
    except ImproperlyConfigured as exc:
        sys.exit(f"manage.py: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
