"""Every Redis key of the service, each built by exactly one function here.

Key families (all under PREFIX): function, key, type, what it holds. Times are epoch ms unless
marked (s); US separates the parts of a packed value.

    profile_seq         seq:profile               STRING  last profile id given (never reused)
    profiles            profiles                  ZSET    profile id -> created_at (s)
    profile             profile:{pid}             HASH    the profile record (token encrypted)
    page_owner          page:{page_id}            STRING  id of the profile owning the Page
    contact             contact:{cid}             HASH    data field -> value, FBOPTIN_XXX too
    recipients          p:{pid}:recipients        HASH    PSID or "user_ref:<ref>" -> contact id
    seen                p:{pid}:seen              HASH    recipient -> last inbound interaction
    unmatched           p:{pid}:unmatched         ZSET    "rcpt US ref US source" -> time: opt-ins
                                                          whose ref we could not trust (capped)
    marketing           p:{pid}:marketing         HASH    recipient -> "status US expiry US time"
                                                          of a marketing opt-in (kept, not used)
    awaiting            p:{pid}:await             HASH    recipient -> messages awaiting receipts
    stat_days           p:{pid}:days              ZSET    YYYY-MM-DD -> YYYYMMDD, days with stats
    day_counters        p:{pid}:day:{day}         HASH    counts: sent, delivered, read, warning,
                                                          failed, <kind>:<reason>, no_receipts
    day_rows            p:{pid}:day:{day}:{kind}  LIST    rows behind a count: sent "time contact
                                                          mid"; warning/failed (also per reason)
                                                          "time contact reason detail";
                                                          delivered/read "time sent-row-index"
    profile_programs    p:{pid}:programs          SET     ids of programs with a node using it
    rows_trimmed_until  p:{pid}:trimmed           STRING  YYYYMMDD up to which rows were dropped
    sending             p:{pid}:sending           HASH    while sending is paused: state (paused,
                                                          probing), reason, detail, since,
                                                          resume_at, cooldown, probe, probe_at
    send_window         p:{pid}:sendwin           HASH    recent send results in ten buckets:
                                                          m<i> bucket, n<i> sends, b<i> refused
                                                          (expires a window after the last send)
    unreachable         p:{pid}:unreachable       ZSET    recipient -> until when it is not sent
                                                          to (trimmed when due; lifted on contact)
    consent_log         p:{pid}:consent:{cid}     LIST    consent events, oldest first: "time US
                                                          type US source US verified US
                                                          recipient US page_id" (capped)
    consent_state       p:{pid}:opted_in          SET     contacts whose consent stands
                        p:{pid}:opted_out         SET     contacts who withdrew it (not sent)
    profile_runs        p:{pid}:run_ids           ZSET    run id -> created time, runs still kept
    profile_runs_v1     p:{pid}:runs              SET     run ids before 2026-11-26 (purge only)
    program             program:{id}              HASH    name, status, nodes JSON, updated_at (s)
    programs            programs                  ZSET    program id -> updated_at (s)
    run                 run:{rid}                 HASH    ids, node JSON, total, batch_size,
                                                          batches, state, created_at, done_at,
                                                          sent/warning/failed counts,
                                                          failed:<reason> counts; callback_url,
                                                          callback_state,
                                                          callback_attempts, callback_attempted_at,
                                                          callback_delivered_at / _failed_at,
                                                          callback_error
    run_contacts        run:{rid}:contacts        LIST    contact ids in order; a batch is a slice
    run_outcomes        run:{rid}:outcomes        HASH    contact id -> outcome JSON
    run_batches         run:{rid}:batches         HASH    batch n -> queued/done, job:<n> -> RQ
                                                          job id, resumes:<n> -> times resumed
    run_recovered       run:{rid}:recovered       HASH    contact id -> the run that sent it again
                                                          (a recovery's; same retention as the run)
    recovery            recovery:{id}             HASH    a recovery: profile, window, state,
                                                          its runs (JSON), contacts; run retention
    run_lease           run:{rid}:lease:{batch}   STRING  token of the worker holding the batch
    runs_active         runs:active               ZSET    run id -> created time, until all settled
    runs_ready          runs:ready                ZSET    "profile US run US batch" -> ready time
    deadlines           runs:deadlines            ZSET    "run US contact" -> time it is interrupted
    callbacks_due       runs:callbacks_due        ZSET    run id -> time its summary is due to the
                                                          program engine (runs with callback_url)
    rate                rate:{page_id}            STRING  next free send slot (us, Redis clock)
    rate_rest           rate:{page_id}:rest       STRING  present while the Page rests
    tick                tick:{task}               STRING  lock of a periodic task for an interval
    metric              metrics:{name}            HASH    counters shared by all processes
    inbox               inbox                     LIST    webhook writes parked when webhooks
                                                          crowd in, oldest first: JSON [events,
                                                          kinds] (storage/inbound.py)
    inbox_failed        inbox:failed              LIST    parked writes that failed to apply
                                                          (capped), for the operator
    user                user:{fb_user_id}         HASH    name, Pages and tasks JSON, Pages lost,
                                                          checked_ms / failed_ms, the login token
                                                          (encrypted: roles are re-checked)
    login               login:{nonce}             STRING  a login's Pages, tokens encrypted (15 min)
    deletion            deletion:{code}           STRING  data deletion result JSON (90 days)
    migrated            migrated:{name}           STRING  a one-off data fix is done (its count)
    erased              erased                    ZSET    keyed fingerprint of an erased contact
                                                          -> when: older opt-ins replayed by
                                                          Facebook do not bring it back

What bounds each family (none grows with time alone; "retention" is the hourly pass,
jobs/profile_checks.py `retention_pass`; TTLs are set where the key is written):

    profile_seq, profiles, profile, page_owner, profile_programs, rows_trimmed_until: one or
        one entry per profile (a deleted profile's keys go with its purge).
    program, programs: one per program.
    contact, recipients, seen, marketing: proportional to contacts and the people who opted in
        or wrote to a Page (one entry each, overwritten, never appended).
    unmatched: capped per profile (storage/inbound.py UNMATCHED_KEPT, oldest dropped).
    consent_log, consent_state: one list (capped at CONSENT_EVENTS_KEPT) and one
        member per contact that ever opted in to a profile; kept until the contact is erased
        or the profile purged, not by age: the proof of consent must outlive the statistics.
    migrated: one per one-off fix (a fixed set).
    erased: erasures of the last ERASED_REMEMBERED_DAYS
        (retention); a fingerprint names nobody without the server's secret.
    awaiting: messages sent in the last RECEIPT_WAIT_DAYS (retention ends the wait).
    stat_days, day_counters: one per profile-day for STATS_RETENTION_DAYS (retention).
    day_rows: one row per message and event for ROW_RETENTION_DAYS (retention).
    sending: only while a profile's sending is paused. send_window: TTL of one window.
    unreachable: people refused as unreachable in the last UNREACHABLE_DAYS (retention).
    profile_runs: runs of the last RUN_RETENTION_DAYS (trimmed as runs are created).
    profile_runs_v1: runs from before 2026-11-26, no longer written (the purge removes it).
    run, run_contacts, run_outcomes, run_batches, run_recovered, recovery: TTL
        RUN_RETENTION_DAYS (outcomes and batches get theirs as batches are set; those made
        before 2026-12-06 without one get it from the first retention pass).
        run_lease: TTL RUN_LEASE_SECONDS.
    runs_active, runs_ready, deadlines, callbacks_due: runs not finished, batches ready, sends
        whose answer was lost (unknown) until their deadline (UNKNOWN_DEADLINE_SECONDS after
        the claim), callbacks owed (at most a day).
    inbox: emptied within milliseconds by the web processes (and each tick, storage/inbound.py);
        it holds what arrived in that time. inbox_failed: capped (INBOX_FAILED_KEPT).
    rate, rate_rest, tick, login, deletion: TTL. metric: one field per label, from fixed sets
        (kinds, outcomes and reasons, buckets). user: one per person who signed in (data
        deletion removes it). RQ's own keys: results and failures with the TTLs each job is
        queued with.

`optin_field` names a profile's field on contacts; `profile_scoped` lists a profile's keys that
do not depend on a day. Lua scripts receive key *templates* made by calling these functions with
"%s" placeholders (`lua_templates`), so a key's shape is still written only once.
"""

from __future__ import annotations

PREFIX = "msgr:"
OPTIN_FIELD_PREFIX = "FBOPTIN_"
CONSENT_EVENTS_KEPT = 100  # per (profile, contact): the newest; a person rarely changes their mind
ERASED_REMEMBERED_DAYS = 7  # Facebook retries a webhook for an hour; late replays stay harmless


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


def run_recovered(rid: str) -> str:
    return f"{PREFIX}run:{rid}:recovered"


def recovery(recovery_id: str) -> str:
    return f"{PREFIX}recovery:{recovery_id}"


def run_lease(rid: str, batch: int | str) -> str:
    return f"{PREFIX}run:{rid}:lease:{batch}"


def runs_active() -> str:
    return f"{PREFIX}runs:active"


def runs_ready() -> str:
    return f"{PREFIX}runs:ready"


def callbacks_due() -> str:
    return f"{PREFIX}runs:callbacks_due"


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


def inbox() -> str:
    return f"{PREFIX}inbox"


def inbox_failed() -> str:
    return f"{PREFIX}inbox:failed"


def user(fb_user_id: str) -> str:
    return f"{PREFIX}user:{fb_user_id}"


def login(nonce: str) -> str:
    return f"{PREFIX}login:{nonce}"


def deletion(code: str) -> str:
    return f"{PREFIX}deletion:{code}"


def sending(pid: str) -> str:
    return f"{PREFIX}p:{pid}:sending"


def send_window(pid: str) -> str:
    return f"{PREFIX}p:{pid}:sendwin"


def unreachable(pid: str) -> str:
    return f"{PREFIX}p:{pid}:unreachable"


def consent_log(pid: str, cid: str) -> str:
    return f"{PREFIX}p:{pid}:consent:{cid}"


def consent_state(pid: str, state: str) -> str:
    """`state` is "opted_in" or "opted_out"."""
    return f"{PREFIX}p:{pid}:{state}"


def migrated(name: str) -> str:
    return f"{PREFIX}migrated:{name}"


def erased() -> str:
    return f"{PREFIX}erased"


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
        sending(pid),
        send_window(pid),
        unreachable(pid),
        consent_state(pid, "opted_in"),
        consent_state(pid, "opted_out"),
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
        "run_recovered": run_recovered(s),
        "runs_active": runs_active(),
        "deadlines": deadlines(),
        "callbacks_due": callbacks_due(),
        "program": program(s),
        "programs": programs(),
        "ready": runs_ready(),
        "run_lease": run_lease(s, s),
        "profile_programs": profile_programs(s),
        "metric": metric(s),
        "inbox": inbox(),
        "inbox_failed": inbox_failed(),
        "sending": sending(s),
        "sendwin": send_window(s),
        "unreachable": unreachable(s),
        "consent": consent_log(s, s),
        "consent_state": consent_state(s, s),
        "erased": erased(),
        "optin_field": OPTIN_FIELD_PREFIX + "%03d",
    }
