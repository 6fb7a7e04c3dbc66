"""`make run`: start Redis if REDIS_URL is unset, then the Procfile processes under honcho.

The embedded Redis keeps its data in var/redis (append-only) so a second run continues where
the first stopped. In sandbox mode the Facebook simulator runs too. Ctrl-C (or SIGTERM) stops
web, worker and simulator first, then Redis, so a worker can finish its batch.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.config import Settings, read_dotenv
from bot.errors import ConfigError
from storage.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


def child_environment(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """What web, worker and simulator need to agree on (sandbox secrets included)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", ""), "PORT": str(settings.port),
           "PYTHONUNBUFFERED": "1"}
    if settings.sandbox:
        env.update(SANDBOX="1", FB_APP_ID=settings.fb_app_id, FB_APP_SECRET=settings.fb_app_secret,
                   SANDBOX_WEBHOOK_URL=f"http://127.0.0.1:{settings.port}/webhook",
                   GRAPH_API_URL=settings.graph_api_url)
    return env


def main() -> int:
    env = dict(os.environ)
    try:  # validate before starting anything; the embedded Redis URL is not known yet
        settings = Settings.from_env({**read_dotenv(ROOT / ".env"), **env, "REDIS_URL": env.get("REDIS_URL") or "unix:///pending"})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    server = None
    if not env.get("REDIS_URL"):
        data_dir = Path(env.get("VAR_DIR") or ROOT / "var") / "redis"
        server = EmbeddedRedis(data_dir)
        env["REDIS_URL"] = server.start()
        print(f"launch: embedded Redis at {env['REDIS_URL']} (data in {data_dir}, append-only)", flush=True)
    try:
        if settings.sandbox:
            env["SANDBOX_SEED"] = str(_load_demo(env))
        return _run_processes(settings, child_environment(settings, env))
    finally:
        if server:
            server.stop()
            print("launch: embedded Redis stopped", flush=True)


def _load_demo(env: dict[str, str]) -> Path:
    """Demo data in Redis and the simulator's seed file (sandbox mode only)."""
    import storage
    from bot import demo
    from bot.crypto import TokenCipher
    settings = Settings.from_env({**read_dotenv(ROOT / ".env"), **env})
    store = storage.Storage(storage.connect(settings.redis_url), cipher=TokenCipher(settings.token_encryption_keys),
                            tz=settings.stats_timezone)
    try:
        profile_id = demo.load(store)
    finally:
        store.redis.close()
    print(f"launch: demo data loaded (profile {profile_id}, program {demo.PROGRAM_ID!r}, node {demo.NODE_ID!r})",
          flush=True)
    return demo.write_seed(Path(env.get("VAR_DIR") or ROOT / "var") / "sandbox-seed.json")


def _run_processes(settings: Settings, env: dict[str, str]) -> int:
    names = ["web", "worker"] + (["sandbox"] if settings.sandbox else [])
    mode = "sandbox mode (Facebook simulator)" if settings.sandbox else "live Facebook"
    print(f"launch: {mode}; web on http://127.0.0.1:{settings.port}", flush=True)
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", *names], cwd=ROOT, env=env)
    signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGTERM))
    while True:
        try:
            return honcho.wait()
        except KeyboardInterrupt:  # the terminal sent SIGINT to honcho as well; let it stop its children
            continue


if __name__ == "__main__":
    sys.exit(main())
