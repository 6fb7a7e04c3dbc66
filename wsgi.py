"""gunicorn entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""
from __future__ import annotations

import sys

from bot import create_app
from bot.errors import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
