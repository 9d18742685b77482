"""PyPI `marathon` 0.13 against Agora's services framework: `list_queue` parses an app that waits
for an offer with enough memory and reports InsufficientMemory; `get_app(...).tasks[0].service_ports`
is the service port the framework assigned.

Usage: marathon_queue_ports.py SERVICES_URL PORTED_APP_ID PORT[,PORT…]
Exits non-zero (with the reason on stderr) when a check fails.
"""

import collections
import collections.abc
import json
import sys
import time

# The client predates Python 3.10, which dropped these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable", "MutableSet", "Set"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def main():
    url, ported, expected = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
    client = MarathonClient(url)
    # More memory than any agent has: it waits in the queue.
    client.create_app("/hungry", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=1048576, instances=1))
    deadline = time.time() + 60
    item = None
    while time.time() < deadline:
        queue = client.list_queue(embed_last_unused_offers=True)
        item = next((i for i in queue if i.app.id == "/hungry"), None)
        summary = item.processed_offers_summary if item else None
        if summary and summary.get("unusedOffersCount", 0) > 0:
            break
        time.sleep(0.5)
    else:
        fail(f"/hungry never showed an unused offer in the queue: {item!r}")
    summary = item.processed_offers_summary
    steps = {s["reason"]: s for s in summary["rejectSummaryLaunchAttempt"]}
    if steps.get("InsufficientMemory", {}).get("declined", 0) < 1:
        fail(f"InsufficientMemory not counted: {summary}")
    for reason in ("InsufficientCpus", "UnfulfilledConstraint", "InsufficientPorts"):
        if steps[reason]["declined"] != 0:
            fail(f"{reason} counted for an app that only lacks memory: {summary}")
    if item.count != 1 or item.app.mem != 1048576 or item.delay.time_left_seconds != 0:
        fail(f"queue item: count {item.count}, mem {item.app.mem}, delay {item.delay!r}")
    last = item.last_unused_offers
    if not last or last[0]["reason"] != ["InsufficientMemory"] or not last[0]["offer"]["agentId"]:
        fail(f"lastUnusedOffers: {last}")

    app = client.get_app(ported, embed_tasks=True)
    if not app.tasks or app.tasks[0].service_ports != expected:
        fail(f"{ported} tasks: {app.tasks!r}, expected service ports {expected}")
    print(json.dumps({
        "processedOffersCount": summary["processedOffersCount"],
        "insufficientMemory": steps["InsufficientMemory"]["declined"],
        "servicePorts": app.tasks[0].service_ports,
    }))


if __name__ == "__main__":
    main()
