# The `helm test` check: GET $READY_URL until it answers 200 {"status": "ready"}, or fail
# after $READY_TIMEOUT_SECONDS with the last answer. Standard library only.
import json
import os
import sys
import time
import urllib.error
import urllib.request

url = os.environ["READY_URL"]
deadline = time.monotonic() + float(os.environ.get("READY_TIMEOUT_SECONDS", "60"))
last = "no answer"
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
            if response.status == 200 and body.get("status") == "ready":
                print(f"ready: {url}")
                sys.exit(0)
            last = f"{response.status} {body}"
    except urllib.error.HTTPError as exc:
        last = f"{exc.code} {exc.read()[:200]!r}"
    except (OSError, ValueError) as exc:
        last = repr(exc)
    if time.monotonic() >= deadline:
        print(f"not ready: {url}: {last}", file=sys.stderr)
        sys.exit(1)
    time.sleep(1)
