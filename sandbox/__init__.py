"""A Facebook Graph API + Messenger webhook simulator for local runs, demos and tests."""

from __future__ import annotations

from sandbox.app import create_app
from sandbox.client import SandboxControl, SandboxError
from sandbox.server import SandboxServer
from sandbox.state import State

__all__ = ["SandboxControl", "SandboxError", "SandboxServer", "State", "create_app"]
