#!/usr/bin/env python3
"""Independent check of dmpushd's webhook signatures with the PyPI `standardwebhooks` package.

Usage: verify.py WHSEC_SECRET < requests.jsonl
Each input line is {"headers": {"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...},
"body": "<the body exactly as received>"}. Prints one line per request: "ok" or "fail: <reason>".
Exit status 0 when every line was read (verdicts are in the output, so a test can also expect "fail").
"""
import json
import sys

from standardwebhooks import Webhook


def main() -> int:
    wh = Webhook(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            wh.verify(req["body"], req["headers"])
            print("ok", flush=True)
        except Exception as e:  # noqa: BLE001 - any verification error is a verdict
            print(f"fail: {type(e).__name__}: {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
