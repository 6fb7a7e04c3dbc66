"""One Page is held to its configured rate: peak per clock second <= the limit, sustained >= 0.95.

    python -m bench.page_pacing [--rate 20] [--contacts 600] [--workers 2] [--quick]

A private redis-server, the simulator answering at once (no echoes or receipts), one profile
whose run of `--contacts` is sent by `--workers` worker processes with RUN_PARALLEL_BATCHES
set so that they all send for the Page at the same time. The simulator counts the sends it
accepts per clock second; the first and last seconds are partial and left out of the
sustained rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from bench._harness import (
    API_TOKEN,
    Workers,
    mark,
    parse_sizes,
    run_main,
    service_env,
    start_app,
    start_redis,
    start_simulator,
)

QUICK = {"contacts": 90, "rate": 30, "workers": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.page_pacing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rate", type=int, default=20, help="SEND_RATE_PER_PAGE (default 20)")
    parser.add_argument("--contacts", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parse_sizes(parser, argv, QUICK)
    return run_main(
        lambda stack, tmp: run(args, stack, tmp),
        "bench-pacing-",
        False,
        "workers, simulator and Redis",
    )


def run(args, stack: ExitStack, tmp: Path) -> int:
    from storage.inbound import Event

    redis_server = start_redis(stack, tmp)
    _, simulator_url, fb = start_simulator(stack)
    batch = max(10, args.contacts // (args.workers * 3))
    env = service_env(
        redis_server.url,
        simulator_url,
        SEND_RATE_PER_PAGE=str(args.rate),
        RUN_BATCH_SIZE=str(batch),
        RUN_PARALLEL_BATCHES=str(args.workers),
    )
    app = start_app(stack, env)
    store, client = app.extensions["storage"], app.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    page = fb.create_page(name="Paced Page")
    profile = client.post(
        "/api/v1/profiles",
        headers=auth,
        json={"name": "Paced", "page_id": page["id"], "page_access_token": page["token"]},
    ).get_json()
    now = int(time.time() * 1000)
    psids = fb.add_people(
        page["id"], [{"last_interaction_ms": now, "receipts": "none"}] * args.contacts
    )
    store.inbound.apply(
        [
            Event("optin", page["id"], p, now, profile=profile["id"], contact=f"c{i}")
            for i, p in enumerate(psids)
        ]
    )
    node = {
        "id": "n1",
        "type": "messenger",
        "profile_id": profile["id"],
        "tag": "ACCOUNT_UPDATE",
        "message": "Hi",
    }
    client.put(
        "/api/v1/programs/paced",
        headers=auth,
        json={"name": "Paced", "status": "active", "nodes": [node]},
    )
    workers = Workers(env, tmp)
    stack.callback(workers.stop)
    workers.start(args.workers)
    workers.wait_registered(app.extensions["rq_queue"].connection)
    started = time.monotonic()
    run_id = client.post(
        "/api/v1/programs/paced/nodes/n1/runs",
        headers=auth,
        json={"contacts": [{"id": f"c{i}"} for i in range(args.contacts)]},
    ).get_json()["run_id"]
    while client.get(f"/api/v1/runs/{run_id}?limit=1", headers=auth).get_json()["state"] != "done":
        if time.monotonic() - started > args.contacts / args.rate * 3 + 60:
            raise RuntimeError("the run did not finish")
        time.sleep(0.2)
    per_second = dict(sorted((int(k), v) for k, v in fb.rates(page["id"]).items()))
    seconds = list(per_second.values())
    full = seconds[1:-1] or seconds
    sent = sum(seconds)
    arrivals = sorted(s["received_ms"] for s in fb.sends(page_id=page["id"], status="accepted"))
    sustained = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1000)
    print(f"one Page, limit {args.rate}/s, {args.workers} workers sending for it, {sent} messages")
    print(f"accepted per clock second: {seconds}")
    print(f"peak 1-s rate: {max(full)} (limit {args.rate}): {mark(max(seconds) <= args.rate)}")
    print(
        f"sustained rate: {sustained:.2f}/s = {sustained / args.rate:.3f} of the limit "
        f"(target >= 0.95): {mark(sustained >= 0.95 * args.rate)}"
    )
    return 0 if sent == args.contacts else 1


if __name__ == "__main__":
    sys.exit(main())
