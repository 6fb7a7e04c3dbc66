"""Every Redis key of the service, each built by exactly one function here.

Key families (all under PREFIX):

    seq:profile                  STRING  profile id counter; ids (and so FBOPTIN_XXX) are never reused
    profiles                     ZSET    profile id -> created_at (s)
    profile:{pid}                HASH    the profile record (token encrypted)
    page:{page_id}               STRING  profile id owning that Page (a Page has at most one profile)
    contact:{cid}                HASH    data field -> value, including every FBOPTIN_XXX
    p:{pid}:recipients           HASH    recipient (PSID or "user_ref:<ref>") -> contact id
    p:{pid}:seen                 HASH    recipient -> last inbound interaction (epoch ms)
    p:{pid}:unmatched            ZSET    opt-ins whose ref we could not trust -> epoch ms (capped)
    p:{pid}:marketing            HASH    PSID -> marketing opt-in status|token expiry (kept, not used)
    p:{pid}:await                HASH    recipient -> messages awaiting delivery/read receipts
    p:{pid}:days                 ZSET    day (YYYY-MM-DD) -> YYYYMMDD, days that have statistics
    p:{pid}:day:{day}            HASH    counters: sent, delivered, read, warning, failed, <kind>:<reason>,
                                         no_receipts (sends to checkbox user_refs: no receipts come)
    p:{pid}:day:{day}:{kind}     LIST    rows behind a counter (US-separated): sent "ms contact mid";
                                         warning/failed (and per reason, kind "warning:<reason>")
                                         "ms contact reason detail"; delivered/read "ms index-of-sent-row"
    p:{pid}:programs             SET     ids of programs with a node using the profile
    p:{pid}:trimmed              STRING  YYYYMMDD up to which per-contact rows were dropped (retention)
    p:{pid}:runs                 SET     ids of the runs that sent for the profile (deleted with it)
    program:{id}                 HASH    name, status, nodes (JSON), updated_at
    programs                     ZSET    program id -> updated_at
    run:{rid}                    HASH    run meta: program, node snapshot, counts, state, batch bookkeeping
    run:{rid}:contacts           LIST    contact ids in the order handed over (batches are slices)
    run:{rid}:outcomes           HASH    contact id -> outcome JSON (inflight/unknown/sent/warning/failed)
    run:{rid}:batches            HASH    batch number -> queued/done; job:<n> -> current RQ job id
    run:{rid}:lease:{n}          STRING  token of the worker processing batch n (expires if it dies)
    runs:active                  ZSET    run id -> created ms, until every contact has an outcome
    runs:deadlines               ZSET    "run US contact" -> ms when an in-flight send becomes interrupted
    runs:ready                   ZSET    "profile US run US batch" -> ms from when a queued batch may be
                                         taken by any worker already sending (to send several Pages at once)
    rate:{page_id}               STRING  next free send slot of a Page (ms, shared by all workers)
    rate:{page_id}:rest          STRING  present while the Page rests after a rate-limit signal
    tick:{task}                  STRING  lock: the worker that runs a periodic task this interval
    user:{fb_user_id}            HASH    a Facebook user who signed in: name, Pages and tasks (no tokens)
    login:{nonce}                STRING  one Facebook login's Pages with encrypted tokens (15 minutes)
    deletion:{code}              STRING  result of a Facebook data deletion request (90 days)
    metrics:{name}               HASH    counters shared by all processes, read by /metrics

Lua scripts receive key *templates* made by calling these functions with "%s" placeholders
(`lua_templates`), so a key's shape is still written only once.
"""

from __future__ import annotations

PREFIX = "msgr:"
OPTIN_FIELD_PREFIX = "FBOPTIN_"


def optin_field(profile_id: int | str) -> str:
    """The profile's own opt-in data field, e.g. FBOPTIN_007."""
    return f"{OPTIN_FIELD_PREFIX}{int(profile_id):03d}"


def profile_seq() -> str:
    return f"{PREFIX}seq:profile"


def profiles() -> str:
    return f"{PREFIX}profiles"


def profile(pid: str) -> str:
    return f"{PREFIX}profile:{pid}"


def page_owner(page_id: str) -> str:
    return f"{PREFIX}page:{page_id}"


def contact(cid: str) -> str:
    return f"{PREFIX}contact:{cid}"


def recipients(pid: str) -> str:
    return f"{PREFIX}p:{pid}:recipients"


def seen(pid: str) -> str:
    return f"{PREFIX}p:{pid}:seen"


def unmatched(pid: str) -> str:
    return f"{PREFIX}p:{pid}:unmatched"


def marketing(pid: str) -> str:
    return f"{PREFIX}p:{pid}:marketing"


def awaiting(pid: str) -> str:
    return f"{PREFIX}p:{pid}:await"


def stat_days(pid: str) -> str:
    return f"{PREFIX}p:{pid}:days"


def day_counters(pid: str, day: str) -> str:
    return f"{PREFIX}p:{pid}:day:{day}"


def day_rows(pid: str, day: str, kind: str) -> str:
    return f"{PREFIX}p:{pid}:day:{day}:{kind}"


def profile_programs(pid: str) -> str:
    return f"{PREFIX}p:{pid}:programs"


def rows_trimmed_until(pid: str) -> str:
    return f"{PREFIX}p:{pid}:trimmed"


def profile_runs(pid: str) -> str:
    """The profile's runs still kept (sorted set: run id -> creation ms), for deleting them."""
    return f"{PREFIX}p:{pid}:run_ids"


def profile_runs_v1(pid: str) -> str:
    """The same as a set that never forgot expired runs (before 2026-11-26): read and deleted
    with the profile."""
    return f"{PREFIX}p:{pid}:runs"


def program(prog_id: str) -> str:
    return f"{PREFIX}program:{prog_id}"


def programs() -> str:
    return f"{PREFIX}programs"


def run(rid: str) -> str:
    return f"{PREFIX}run:{rid}"


def run_contacts(rid: str) -> str:
    return f"{PREFIX}run:{rid}:contacts"


def run_outcomes(rid: str) -> str:
    return f"{PREFIX}run:{rid}:outcomes"


def run_batches(rid: str) -> str:
    return f"{PREFIX}run:{rid}:batches"


def run_lease(rid: str, batch: int | str) -> str:
    return f"{PREFIX}run:{rid}:lease:{batch}"


def runs_active() -> str:
    return f"{PREFIX}runs:active"


def runs_ready() -> str:
    return f"{PREFIX}runs:ready"


def deadlines() -> str:
    return f"{PREFIX}runs:deadlines"


def rate(page_id: str) -> str:
    return f"{PREFIX}rate:{page_id}"


def rate_rest(page_id: str) -> str:
    return f"{PREFIX}rate:{page_id}:rest"


def tick(task: str) -> str:
    return f"{PREFIX}tick:{task}"


def metric(name: str) -> str:
    return f"{PREFIX}metrics:{name}"


def user(fb_user_id: str) -> str:
    return f"{PREFIX}user:{fb_user_id}"


def login(nonce: str) -> str:
    return f"{PREFIX}login:{nonce}"


def deletion(code: str) -> str:
    return f"{PREFIX}deletion:{code}"


def profile_scoped(pid: str) -> list[str]:
    """Keys of one profile that do not depend on a day (deleted with the profile)."""
    return [
        recipients(pid),
        seen(pid),
        unmatched(pid),
        marketing(pid),
        awaiting(pid),
        stat_days(pid),
        profile_programs(pid),
        rows_trimmed_until(pid),
    ]


def lua_templates() -> dict[str, str]:
    """Key templates for Lua scripts (string.format with the same arguments, in order)."""
    s = "%s"
    return {
        "profile": profile(s),
        "profiles": profiles(),
        "page": page_owner(s),
        "contact": contact(s),
        "recipients": recipients(s),
        "seen": seen(s),
        "unmatched": unmatched(s),
        "marketing": marketing(s),
        "await": awaiting(s),
        "days": stat_days(s),
        "day": day_counters(s, s),
        "rows": day_rows(s, s, s),
        "run": run(s),
        "run_outcomes": run_outcomes(s),
        "runs_active": runs_active(),
        "deadlines": deadlines(),
        "program": program(s),
        "programs": programs(),
        "ready": runs_ready(),
        "run_lease": run_lease(s, s),
        "profile_programs": profile_programs(s),
        "metric": metric(s),
        "optin_field": OPTIN_FIELD_PREFIX + "%03d",
    }
