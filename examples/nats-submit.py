#!/usr/bin/env python3
"""Submits a job file to faro by request/reply with nats-py, prints the answer, and with
--follow prints each run's outcome from the outcome feed as it ends.

    FARO_NATS_PASSWORD=... python3 examples/nats-submit.py [--follow] jobs.json [SUBMISSION_ID]

Reads FARO_NATS_URL (nats://127.0.0.1:4222) and FARO_NATS_USER (submitter), as faro does. The
answer is JSON: {"submission_id", "accepted": true, "runs": [{"job_id", "run_id"}], ...} or
{"accepted": false, "error": {"job", "field", "problem"}}. Each outcome is one line of JSON:
{"run_id", "job_id", "queue", "target", "attempt", "status", "error", "finished_at", ...}.
Exits 0 when accepted (and, following, every run ended), 1 when refused, 2 when it could
not ask or the outcomes did not all come within 60 s. Needs nats-py (pip install nats-py).
"""

import asyncio
import json
import os
import sys

import nats
from nats.js.api import DeliverPolicy

FOLLOW_LIMIT = 60.0


async def submit(body: bytes, submission_id: str | None, follow: bool) -> int:
    user = os.environ.get("FARO_NATS_USER", "submitter")
    client = await nats.connect(
        os.environ.get("FARO_NATS_URL", "nats://127.0.0.1:4222"),
        user=user,
        password=os.environ["FARO_NATS_PASSWORD"],
        # Replies come on the user's own inboxes: the only ones it may read.
        inbox_prefix=f"_INBOX_{user}",
    )
    try:
        feed = None
        if follow:
            # Following from now on, before submitting: no outcome can be missed.
            # The stream is named: looking it up by subject is an API the user may not use.
            feed = await client.jetstream().subscribe(
                "faro.outcomes.>",
                stream="FARO_OUTCOMES",
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
            )
        # Naming the submission makes sending it again harmless: a repeat gets the first
        # answer, and nothing runs twice.
        headers = {"Nats-Msg-Id": submission_id} if submission_id else None
        reply = await client.request(
            "faro.api.dispatcher.submit", body, timeout=10, headers=headers
        )
        answer = json.loads(reply.data)
        print(json.dumps(answer))
        if "error" in answer and "accepted" not in answer:
            return 2  # not recorded now (PostgreSQL down): send it again
        if not answer.get("accepted"):
            return 1
        if feed is None:
            return 0
        waiting = {run["run_id"] for run in answer["runs"]}
        deadline = asyncio.get_running_loop().time() + FOLLOW_LIMIT
        while waiting:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                print(f"nats-submit: no outcome for {sorted(waiting)}", file=sys.stderr)
                return 2
            message = await feed.next_msg(timeout=left)
            outcome = json.loads(message.data)
            if outcome["run_id"] in waiting:
                waiting.discard(outcome["run_id"])
                print(json.dumps(outcome))
        return 0
    finally:
        await client.close()


def main() -> int:
    args = sys.argv[1:]
    follow = "--follow" in args
    args = [arg for arg in args if arg != "--follow"]
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], "rb") as file:
        body = file.read()
    try:
        return asyncio.run(submit(body, args[1] if len(args) == 2 else None, follow))
    except Exception as error:  # no server, no answer in time, refused credentials
        print(f"nats-submit: cannot submit: {error!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
