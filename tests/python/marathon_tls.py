"""Reads one app with the community's Marathon client (PyPI `marathon`) over https, verifying the
server against a CA file only (OpenSSL, through `requests`):

    python marathon_tls.py https://127.0.0.1:8080 /path/ca.pem /app-id [https://master:5050 …]

Prints `tasks_running=<n> task_ids=<id,…>`; each further URL's `/health` is fetched with the same
CA file and printed as `health <url> <status>`. Exits non-zero when a handshake fails.
"""

import collections
import collections.abc
import sys

# The client predates Python 3.10, which dropped these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import requests  # noqa: E402
from marathon import MarathonClient  # noqa: E402


def main():
    url, ca_file, app_id = sys.argv[1], sys.argv[2], sys.argv[3]
    client = MarathonClient(url, verify=ca_file, timeout=10)
    app = client.get_app(app_id, embed_tasks=True)
    ids = sorted(t.id for t in app.tasks)
    print(f"tasks_running={app.tasks_running} task_ids={','.join(ids)}")
    for other in sys.argv[4:]:
        r = requests.get(f"{other}/health", verify=ca_file, timeout=10)
        print(f"health {other} {r.status_code}")


if __name__ == "__main__":
    main()
