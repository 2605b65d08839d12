"""The image's HEALTHCHECK: whatever the container runs, the check that fits it.

``pokesaga run tracker``: the tracker's API answers (``POKESAGA_TRACKER_PORT``);
``pokesaga run SERVICE``: the service is alive (``/health/live`` on ``POKESAGA_METRICS_PORT``);
anything else (``pokesaga start``, a shell): nothing serves, so nothing to fail. Exit 0 healthy, 1 not.
"""

import os
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    words = [w.decode(errors="replace") for w in command if w]
    if "run" not in words or words.index("run") + 1 >= len(words):
        return 0
    what = words[words.index("run") + 1]
    if what == "tracker":
        url = f"http://127.0.0.1:{os.environ.get('POKESAGA_TRACKER_PORT', '6066')}/sagas?limit=1"
    else:
        url = f"http://127.0.0.1:{os.environ.get('POKESAGA_METRICS_PORT', '9100')}/health/live"
    request = urllib.request.Request(url)
    token = os.environ.get("POKESAGA_TRACKER_TOKEN")
    if what == "tracker" and token:  # the console behind its login
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"{what}: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
