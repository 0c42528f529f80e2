#!/usr/bin/env python3
"""Submits a job file to faro by request/reply with nats-py, and prints the answer.

    FARO_NATS_PASSWORD=... python3 examples/nats-submit.py jobs.json [SUBMISSION_ID]

Reads FARO_NATS_URL (nats://127.0.0.1:4222) and FARO_NATS_USER (cli), as faro does. The
answer is JSON: {"submission_id", "accepted": true, "runs": [{"job_id", "run_id"}], ...} or
{"accepted": false, "error": {"job", "field", "problem"}}. Exits 0 when accepted, 1 when
refused, 2 when it could not ask. Needs nats-py (pip install nats-py).
"""

import asyncio
import json
import os
import sys

import nats


async def submit(body: bytes, submission_id: str | None) -> dict:
    user = os.environ.get("FARO_NATS_USER", "cli")
    client = await nats.connect(
        os.environ.get("FARO_NATS_URL", "nats://127.0.0.1:4222"),
        user=user,
        password=os.environ["FARO_NATS_PASSWORD"],
        # Replies come on the user's own inboxes: the only ones it may read.
        inbox_prefix=f"_INBOX_{user}",
    )
    try:
        # Naming the submission makes sending it again harmless: a repeat gets the first
        # answer, and nothing runs twice.
        headers = {"Nats-Msg-Id": submission_id} if submission_id else None
        reply = await client.request(
            "faro.api.dispatcher.submit", body, timeout=10, headers=headers
        )
        return json.loads(reply.data)
    finally:
        await client.close()


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as file:
        body = file.read()
    try:
        answer = asyncio.run(submit(body, sys.argv[2] if len(sys.argv) == 3 else None))
    except Exception as error:  # no server, no answer in time, refused credentials
        print(f"nats-submit: cannot submit: {error!r}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    if "error" in answer and "accepted" not in answer:
        return 2  # not recorded now (PostgreSQL down): send it again
    return 0 if answer.get("accepted") else 1


if __name__ == "__main__":
    sys.exit(main())
