"""Keep what the simulator issued across restarts: a JSON file, rewritten atomically.

Facebook does not forget a Page token or a login when its servers restart, so the simulator of
`make run` must not either: a Page connected through its Facebook Login would otherwise hold a
token the restarted simulator refuses (190). Kept: Pages (token, sponsors, subscription,
templates), retired tokens, people and checkbox user_refs, Login users, their tokens and codes,
and the id counters (so new ids never clash with kept ones). Not kept: the logs of sends and
webhooks, faults, rate counters and config, which are a run's own (the seed sets the config).

A thread writes the file within `every_s` of a change (temp file, fsync, rename: a crash leaves
the old file or the new one, never half of one) and once more on stop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from sandbox.state import State

log = logging.getLogger(__name__)
VERSION = 1
KEPT = ("tokens", "dead_tokens", "people", "user_refs", "users", "user_tokens", "codes", "counters")


def snapshot(state: State) -> str:
    """The kept part of the state as JSON."""
    with state.lock:
        pages = [
            {**page, "templates": list(page["templates"].values())} for page in state.pages.values()
        ]
        kept = {name: getattr(state, name) for name in KEPT}
        return json.dumps({"version": VERSION, "pages": pages, **kept}, sort_keys=True)


def restore(state: State, text: str) -> None:
    """Replace the kept part of the state with a snapshot's; ValueError if it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} simulator state")
    pages = {}
    for page in data["pages"]:
        templates = {(t["name"], t["language"]): t for t in page["templates"]}
        pages[page["id"]] = {**page, "templates": templates}
    with state.lock:
        state.pages = pages
        for name in KEPT:
            setattr(state, name, data[name])


class StateFile:
    """Load the state from `path`, then keep the file up to date until `stop`."""

    def __init__(self, state: State, path: str | Path, every_s: float = 1.0) -> None:
        self.state, self.path, self.every_s = state, Path(path), every_s
        self._written: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sandbox-state", daemon=True)

    def load(self) -> bool:
        """Restore the file's state if there is one; False (state untouched) otherwise."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        try:
            restore(self.state, text)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s (not a simulator state: %s); starting afresh", self.path, exc)
            return False
        self._written = text
        return True

    def save(self) -> bool:
        """Write the state if it changed since the last write; True if written."""
        text = snapshot(self.state)
        if text == self._written:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._written = text
        return True

    def start(self) -> StateFile:
        """Save every `every_s` from a thread of its own."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and save one last time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._try_save()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._try_save()

    def _try_save(self) -> None:
        try:
            self.save()
        except OSError as exc:  # a full disk must not stop the simulator: try again later
            log.warning("could not save the simulator state to %s: %s", self.path, exc)
