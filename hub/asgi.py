"""ASGI entry point. Prefer WSGI (gunicorn): body-size limits are enforced there before parsing."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
application = get_asgi_application()
