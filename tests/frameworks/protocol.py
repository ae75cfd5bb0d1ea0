"""The check scripts' protocol: cases as JSON on stdin, one result per case as JSON on stdout.

The frameworks log to stdout; the answer goes to a duplicate of the original stdout and
everything else to stderr, so the JSON stays clean."""

import json
import os
import sys


def serve(check):
    cases = json.load(sys.stdin)["cases"]
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    json.dump([check(case) for case in cases], out)
    out.close()
