"""gunicorn entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from __future__ import annotations

from bot.app import create_app
from bot.config import settings_or_exit

app = create_app(settings_or_exit())
