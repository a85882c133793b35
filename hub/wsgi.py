"""WSGI entry point (gunicorn hub.wsgi)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from hub.middleware import ChunkedBodyReader

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
application = ChunkedBodyReader(get_wsgi_application(), limit=settings.MAX_BODY_BYTES)
