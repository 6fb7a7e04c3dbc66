"""The Flask app that jobs run inside (settings, storage, Graph client).

A worker process builds it once (`jobs.worker`); tests that run jobs inline install their own
with `use_app`. Jobs take ids, not objects, and re-read state through `storage`.
"""
from __future__ import annotations

import functools
from typing import Callable

from flask import Flask

_app: Flask | None = None


def use_app(app: Flask) -> None:
    global _app
    _app = app


def get_app() -> Flask:
    global _app
    if _app is None:
        from bot.app import create_app
        _app = create_app()
    return _app


def in_app_context(func: Callable) -> Callable:
    """Run a job function inside the app context (so `get_storage()` etc. work)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with get_app().app_context():
            return func(*args, **kwargs)
    return wrapper
