#!/usr/bin/env python3
"""Drives the community Chronos client, PyPI `chronos-python` (module `chronos`), against Agora's
batch framework, unchanged, and checks every answer.

Usage: chronos_client.py HOST:PORT OUT_DIR
  (or CHRONOS_SERVER / CHRONOS_OUT_DIR in the environment). OUT_DIR must be writable by the task
  user: the jobs' commands write files there, which proves they ran.
With CHRONOS_TOKEN set, the server requires `Authorization: Bearer <token>` (--api-token-file),
and the script checks that the client gets in with it (as a header, and as the password of
HTTP basic auth) and not without it; it then runs only a short add/list/delete round.

Exits 0 when everything held, non-zero with a message naming what did not.
"""

import datetime
import os
import sys
import time


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


try:
    import chronos
except ImportError as e:  # the client is part of the test: missing is a failure, not a skip
    fail("PyPI chronos-python is not installed for %s: %s (scripts/test installs it)" % (sys.executable, e))

SERVER = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CHRONOS_SERVER", "")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("CHRONOS_OUT_DIR", "")
TOKEN = os.environ.get("CHRONOS_TOKEN", "")
if not SERVER or not OUT:
    fail("usage: chronos_client.py HOST:PORT OUT_DIR")

WRITER = "chronos-writer"
CHILD = "chronos-child"
SLEEPER = "chronos-sleeper"


def check(condition, message):
    if not condition:
        fail(message)


def step(message):
    print("-- " + message, flush=True)


def wait_for(what, within, probe):
    """Calls probe() until it returns something truthy; fails after `within` seconds."""
    deadline = time.time() + within
    last = None
    while time.time() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    fail("%s: not within %d s (last seen: %r)" % (what, within, last))


def lines(name):
    try:
        with open(os.path.join(OUT, name)) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def job(client, name):
    found = [j for j in client.list() if j["name"] == name]
    check(len(found) == 1, "list() holds %d jobs named %s: %r" % (len(found), name, found))
    return found[0]


def raises(call, what):
    try:
        call()
    except chronos.ChronosAPIError:
        return
    fail("%s was accepted" % what)


def utc(seconds_from_now=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds_from_now)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def auth_round():
    step("auth: refused without credentials")
    anonymous = chronos.ChronosClient(servers=SERVER, proto="http")
    raises(anonymous.list, "list() without credentials")
    raises(lambda: chronos.ChronosClient(servers=SERVER, username="ops", password="wrong").list(),
           "list() with a wrong password")
    step("auth: the token as a header, and as the basic auth password")
    with_header = chronos.ChronosClient(servers=SERVER, extra_headers={"Authorization": "Bearer " + TOKEN})
    check(with_header.list() == [], "list() with the token: %r" % with_header.list())
    basic = chronos.ChronosClient(servers=SERVER, proto="http", username="ops", password=TOKEN)
    check(basic.add({"name": "auth-job", "command": "true", "schedule": "R1/%s/PT1H" % utc(3600),
                     "owner": "ops@example.com", "disabled": False, "cpus": 0.1, "mem": 32}) is None,
          "add() with basic auth")
    check([j["name"] for j in basic.list()] == ["auth-job"], "list() with basic auth")
    check(basic.delete("auth-job") is None, "delete() with basic auth")
    check(basic.list() == [], "the job is gone")
    print("chronos-python auth: all checks passed")


def main():
    if TOKEN:
        auth_round()
        return
    c = chronos.ChronosClient(servers=SERVER, proto="http")
    also = chronos.connect([SERVER])  # the module-level helper, a list of servers

    step("a fresh cluster has no jobs")
    check(c.list() == [], "list() on a fresh cluster: %r" % c.list())
    leader = c._call("/scheduler/leader", "GET")
    check(leader == {"leader": SERVER}, "/scheduler/leader: %r" % (leader,))

    # Every ten minutes: the first run is due at once, the next one after the test.
    step("add a scheduled job starting now")
    writer = {
        "name": WRITER,
        "command": "echo ran >> %s/writer.txt" % OUT,
        "schedule": "R/%s/PT10M" % utc(),
        "epsilon": "PT30S",
        "owner": "ops@example.com",
        "ownerName": "Ops",
        "description": "writes a line per run",
        "disabled": False,
        "retries": 0,
        "cpus": 0.1,
        "mem": 32,
    }
    check(c.add(writer) is None, "add() answers 204 with no body")
    listed = job(c, WRITER)
    for k in ["command", "schedule", "epsilon", "owner", "ownerName", "description", "retries"]:
        check(listed[k] == writer[k], "list(): %s is %r, not %r" % (k, listed.get(k), writer[k]))
    check("parents" not in listed and "container" not in listed, "a scheduled job: %r" % listed)
    for k in ["successCount", "errorCount", "lastSuccess", "lastError", "errorsSinceLastSuccess",
              "scheduleTimeZone", "shell", "async", "disabled", "cpus", "mem", "disk",
              "environmentVariables", "uris", "arguments"]:
        check(k in listed, "list(): no %s in %r" % (k, listed))

    step("search by name and by command")
    check([j["name"] for j in c.search(name="writer")] == [WRITER], "search(name=writer)")
    check([j["name"] for j in c.search(name="WRITER")] == [WRITER], "search is case-insensitive")
    check([j["name"] for j in c.search(command="writer.txt")] == [WRITER], "search(command=…)")
    check([j["name"] for j in also.search(name="chronos", command="echo")] == [WRITER], "both")
    check(c.search(name="no-such-job") == [], "search(name=no-such-job)")
    check(c.search(command="no such command") == [], "search(command=…) matching none")
    check(len(c.search()) == 1, "search() with no criteria lists every job")

    step("the schedule's first run (due now) succeeds")
    first = wait_for("the scheduled run's success", 60, lambda: job(c, WRITER)["successCount"] >= 1
                     and job(c, WRITER))
    check(first["lastSuccess"].endswith("Z") and "T" in first["lastSuccess"],
          "lastSuccess as Chronos writes it: %r" % first["lastSuccess"])
    check(len(lines("writer.txt")) >= 1, "the scheduled run wrote its line")

    step("run it now: successCount and lastSuccess move")
    before = job(c, WRITER)
    written = len(lines("writer.txt"))
    check(c.run(WRITER) is None, "run() answers 204 with no body")
    after = wait_for("the manual run's success", 60,
                     lambda: (lambda j: j["successCount"] > before["successCount"] and j)(job(c, WRITER)))
    check(after["lastSuccess"] > before["lastSuccess"], "lastSuccess moved: %r → %r"
          % (before["lastSuccess"], after["lastSuccess"]))
    check(after["errorCount"] == 0, "no errors: %r" % after)
    check(len(lines("writer.txt")) > written, "the manual run wrote its line")

    step("add a dependent job; it runs after its parent's next success")
    child = {
        "name": CHILD,
        "command": "echo child >> %s/child.txt" % OUT,
        "parents": [WRITER],
        "owner": "ops@example.com",
        "disabled": False,
        "cpus": 0.1,
        "mem": 32,
    }
    check(c.add(child) is None, "add() of a dependent job answers 204")
    listed = job(c, CHILD)
    check(listed["parents"] == [WRITER], "the child's parents: %r" % listed)
    check("schedule" not in listed and "scheduleTimeZone" not in listed, "a dependent job: %r" % listed)
    check(listed["successCount"] == 0, "the child has not run yet")
    parent_before = job(c, WRITER)
    c.run(WRITER)
    parent_after = wait_for("the parent's next success", 60,
                            lambda: (lambda j: j["successCount"] > parent_before["successCount"] and j)(job(c, WRITER)))
    child_after = wait_for("the child's run", 60,
                           lambda: (lambda j: j["successCount"] >= 1 and j)(job(c, CHILD)))
    check(child_after["lastSuccess"] >= parent_after["lastSuccess"],
          "the child (%s) ran after its parent (%s)" % (child_after["lastSuccess"], parent_after["lastSuccess"]))
    check(lines("child.txt") == ["child"], "the child wrote once: %r" % lines("child.txt"))

    step("the graph, job statistics, scheduler statistics and metrics")
    graph = c.scheduler_graph()
    check(isinstance(graph, str), "graph/csv is text: %r" % (graph,))
    rows = graph.splitlines()
    check("link,%s,%s" % (WRITER, CHILD) in rows, "the graph's link: %r" % rows)
    check(any(r.startswith("node,%s,success," % WRITER) for r in rows), "the parent's node: %r" % rows)
    check(any(r.startswith("node,%s,success," % CHILD) for r in rows), "the child's node: %r" % rows)
    stat = c.job_stat(WRITER)
    check(stat["histogram"]["count"] >= 3, "the histogram counts the runs: %r" % stat["histogram"])
    for k in ["75thPercentile", "95thPercentile", "98thPercentile", "99thPercentile", "median", "mean"]:
        check(isinstance(stat["histogram"][k], (int, float)), "histogram %s: %r" % (k, stat["histogram"]))
    history = stat["taskStatHistory"]
    check(len(history) >= 3 and all(t["status"] == "Success" for t in history),
          "taskStatHistory: %r" % history)
    for k in ["taskId", "jobName", "slaveId", "startTime", "endTime", "duration", "status"]:
        check(k in history[0], "taskStatHistory entries carry %s: %r" % (k, history[0]))
    check(history[0]["jobName"] == WRITER and history[0]["slaveId"], "a task of %s on an agent" % WRITER)
    for call in [c.scheduler_stat_99th, c.scheduler_stat_98th, c.scheduler_stat_95th,
                 c.scheduler_stat_75th, c.scheduler_stat_median, c.scheduler_stat_mean]:
        stats = call()
        check(sorted(s["jobNameLabel"] for s in stats) == sorted([WRITER, CHILD]),
              "%s: %r" % (call.__name__, stats))
        check(all(isinstance(s["time"], (int, float)) for s in stats), "%s times" % call.__name__)
    metrics = c.metrics()
    check(isinstance(metrics, dict), "/metrics is JSON: %r" % (metrics,))
    for k in ["version", "gauges", "counters", "histograms", "meters", "timers"]:
        check(k in metrics, "/metrics has %s: %r" % (k, metrics))
    check(metrics["gauges"]["agora.batch.jobs"]["value"] == 2, "two jobs: %r" % metrics["gauges"])
    check(metrics["counters"]["agora.batch.runs.succeeded"]["count"] >= 4, "runs: %r" % metrics["counters"])

    step("update both jobs from what the client listed")
    updated = c.search(name=WRITER)[0]
    updated["command"] = "echo updated >> %s/writer.txt" % OUT
    updated["retries"] = 1
    check(c.update(updated) is None, "update() answers 204")
    listed = job(c, WRITER)
    check(listed["command"] == updated["command"] and listed["retries"] == 1, "updated: %r" % listed)
    check(listed["successCount"] == updated["successCount"], "the statistics survive an update")
    updated_child = c.search(name=CHILD)[0]
    updated_child["description"] = "follows the writer"
    check(c.update(updated_child) is None, "update() of a dependent job answers 204")
    check(job(c, CHILD)["description"] == "follows the writer", "the child was updated")
    check(job(c, CHILD)["parents"] == [WRITER], "and keeps its parent")
    count = job(c, WRITER)["successCount"]
    c.run(WRITER)
    wait_for("a run of the updated command", 60, lambda: "updated" in lines("writer.txt"))
    wait_for("its success", 60, lambda: job(c, WRITER)["successCount"] > count)
    wait_for("the child's second run", 60, lambda: job(c, CHILD)["successCount"] >= 2)

    step("refusals: an unknown job, a bad job")
    raises(lambda: c.run("no-such-job"), "run() of an unknown job")
    raises(lambda: c.delete("no-such-job"), "delete() of an unknown job")
    raises(lambda: c.job_stat("no-such-job"), "job_stat() of an unknown job")
    raises(lambda: c.add({"name": "bad", "command": "true", "schedule": "R/%s/PT1M" % utc(),
                          "owner": "", "disabled": False, "cpus": -1}), "add() with cpus -1")
    raises(lambda: c.add({"name": "orphan", "command": "true", "parents": ["no-such-job"],
                          "owner": "", "disabled": False}), "add() with an unknown parent")
    check(c.search(name="bad") == [] and c.search(name="orphan") == [], "refused jobs are not kept")

    step("delete_tasks kills a running job's tasks")
    sleeper = {
        "name": SLEEPER,
        "command": "echo started >> %s/sleeper.txt; sleep 120" % OUT,
        "schedule": "R1/%s/PT1H" % utc(3600),
        "owner": "ops@example.com",
        "disabled": False,
        "retries": 0,
        "cpus": 0.1,
        "mem": 32,
    }
    check(c.add(sleeper) is None, "add() of the sleeper")
    c.run(SLEEPER)
    wait_for("the sleeper running", 60, lambda: lines("sleeper.txt") == ["started"]
             and job(c, SLEEPER)["running"])
    check(any(r == "node,%s,fresh,running" % SLEEPER for r in c.scheduler_graph().splitlines()),
          "the graph shows it running")
    check(c.job_stat(SLEEPER)["taskStatHistory"][0]["status"] == "Running", "its task is Running")
    check(c.delete_tasks(SLEEPER) is None, "delete_tasks() answers 204")
    killed = wait_for("the killed run's failure", 60,
                      lambda: (lambda j: j["errorCount"] == 1 and not j["running"] and j)(job(c, SLEEPER)))
    check(killed["successCount"] == 0 and killed["lastError"], "recorded as an error: %r" % killed)
    wait_for("the task's end", 60, lambda: c.job_stat(SLEEPER)["taskStatHistory"][0]["status"] == "Fail")
    check(lines("sleeper.txt") == ["started"], "it ran once")

    step("delete the parent first: its child takes its schedule, as in Chronos")
    schedule = job(c, WRITER)["schedule"]
    check(c.delete(WRITER) is None, "delete(%s) answers 204" % WRITER)
    orphan = job(c, CHILD)
    check(orphan["schedule"] == schedule and "parents" not in orphan,
          "the child runs on its deleted parent's schedule: %r" % orphan)
    check(all(not r.startswith("link,") for r in c.scheduler_graph().splitlines()), "no links left")

    step("delete every job")
    for name in [CHILD, SLEEPER]:
        check(c.delete(name) is None, "delete(%s) answers 204" % name)
    check(c.list() == [], "list() after deleting: %r" % c.list())
    check(c.search(name="chronos") == [], "search() after deleting")
    print("chronos-python: all checks passed")


if __name__ == "__main__":
    main()
