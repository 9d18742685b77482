"""Groups, deployment plans and events through PyPI `marathon` 0.13 (its own models parse every
reply and every event), against the services framework of `agora local`.

usage: marathon_groups.py SERVICES_URL

Checks, and exits non-zero on the first failure:
- create_group with nested groups and dependencies; list_deployments mid-deployment (a plan of
  dependency-ordered steps); a dependency is RUNNING and healthy before a dependent's first task
  is staged (task stagedAt/startedAt and health events);
- list_groups, get_group, update_group (an app changed, group dependencies), scale_group;
- delete_group: dependents stopped first (every task of web killed before api's, api's before
  db's; app_terminated_event in that order);
- a plan that cannot finish: unhealthy_instance_kill_event, 409 and group_change_failed for a
  locked group, delete_deployment rolling back (200) and with force only stopping (202);
- two event streams: one filtered by event_type (only those types arrive), one unfiltered, both
  parsed by the client's EventFactory; event_stream_attached/detached seen when a third attaches
  and leaves.
It leaves an empty group /keep depending on /elsewhere for the caller to find after a restart.
"""

import collections
import collections.abc
import sys
import threading
import time
from datetime import datetime

# The client predates Python 3.10.
for _name in collections.abc.__all__:
    setattr(collections, _name, getattr(collections.abc, _name))

import requests  # noqa: E402
from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp, MarathonGroup, MarathonHealthCheck  # noqa: E402
from marathon.models.deployment import MarathonDeploymentPlan  # noqa: E402

URL = sys.argv[1].rstrip("/")
FILTER = [
    "status_update_event",
    "deployment_info",
    "deployment_step_success",
    "deployment_success",
    "group_change_success",
    "app_terminated_event",
    "health_status_changed_event",
    "event_stream_attached",
    "event_stream_detached",
]

filtered = []
everything = []
stream_errors = []


def pump(types, sink):
    try:
        for ev in MarathonClient(URL).event_stream(event_types=types):
            sink.append(ev)
    except Exception as e:  # a reply the client cannot parse ends the test
        stream_errors.append(f"{types}: {e!r}")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def until(what, f, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        check(not stream_errors, f"event streams: {stream_errors}")
        v = f()
        if v:
            return v
        time.sleep(0.25)
    check(False, f"timed out waiting for {what}")


def of_type(sink, kind):
    return [e for e in list(sink) if e.event_type == kind]


def deployment_done(dep_id):
    return until(
        f"deployment_success of {dep_id}",
        lambda: [e for e in of_type(filtered, "deployment_success") if e.id == dep_id],
    )


client = MarathonClient(URL)
for types, sink in [(FILTER, filtered), (None, everything)]:
    threading.Thread(target=pump, args=(types, sink), daemon=True).start()
until("both streams attached", lambda: of_type(filtered, "event_stream_attached") and of_type(everything, "event_stream_attached"))

# A third stream attaches and leaves: the others hear both.
third = requests.get(f"{URL}/v2/events", headers={"Accept": "text/event-stream"}, stream=True, timeout=10)
check(third.status_code == 200, f"third stream {third.status_code}")
next(third.iter_lines())
third.close()
until("event_stream_detached", lambda: of_type(filtered, "event_stream_detached"))

# /shop/web -> /shop/api -> the group /shop/data (db, healthy only after ~4 s).
ready_check = MarathonHealthCheck(
    protocol="COMMAND",
    command="test -f ready",
    grace_period_seconds=1,
    interval_seconds=1,
    timeout_seconds=5,
    max_consecutive_failures=0,
)
db = MarathonApp(id="db", cmd="sleep 4 && touch ready && sleep 600", cpus=0.05, mem=32, instances=1, health_checks=[ready_check])
api = MarathonApp(id="api", cmd="sleep 600", cpus=0.05, mem=32, instances=2, dependencies=["/shop/data"])
web = MarathonApp(id="web", cmd="sleep 600", cpus=0.05, mem=32, instances=1, dependencies=["api"])
shop = MarathonGroup(id="/shop", apps=[web, api], groups=[MarathonGroup(id="data", apps=[db])])
created = client.create_group(shop)
dep_id = created["deploymentId"]
check(created.get("version"), f"create_group reply {created}")

# Mid-deployment: one plan, three steps in dependency order, db's step in progress.
deps = client.list_deployments()
mine = [d for d in deps if d.id == dep_id]
check(len(mine) == 1, f"list_deployments {deps}")
d = mine[0]
steps = [[(a.action, a.app) for a in s.actions] for s in d.steps]
check(
    steps == [[("StartApplication", "/shop/data/db")], [("StartApplication", "/shop/api")], [("StartApplication", "/shop/web")]],
    f"steps {steps}",
)
check(d.total_steps == 3 and d.current_step == 1, f"step {d.current_step}/{d.total_steps}")
check([a.app for a in d.current_actions] == ["/shop/data/db"], f"current {d.current_actions}")
check(sorted(d.affected_apps) == ["/shop/api", "/shop/data/db", "/shop/web"], f"affected {d.affected_apps}")

deployment_done(dep_id)
info = of_type(filtered, "deployment_info")
check(any(isinstance(e.plan, MarathonDeploymentPlan) and e.plan.id == dep_id for e in info), "deployment_info carries the plan")
check(len([e for e in of_type(filtered, "deployment_step_success") if e.plan.id == dep_id]) == 3, "three steps succeeded")
check(any(e.group_id == "/shop" for e in of_type(filtered, "group_change_success")), "group_change_success for /shop")

# A dependency is running and healthy before a dependent's first task is staged (the tasks as
# the API shows them; the client's task model is another part's).
def tasks(app_id):
    r = requests.get(f"{URL}/v2/apps{app_id}/tasks", timeout=10)
    check(r.status_code == 200, f"tasks of {app_id}: {r.status_code}")
    return r.json()["tasks"]


def app_json(app_id):
    return requests.get(f"{URL}/v2/apps{app_id}", timeout=10).json()["app"]


def at(ts):
    return datetime.fromisoformat(ts)


db_task = tasks("/shop/data/db")[0]
api_tasks = tasks("/shop/api")
web_tasks = tasks("/shop/web")
check(len(api_tasks) == 2 and len(web_tasks) == 1, "every instance runs")
healthy_db = [e for e in of_type(filtered, "health_status_changed_event") if e.app_id == "/shop/data/db" and getattr(e, "alive", False)]
check(healthy_db, "db's health_status_changed_event alive")
first_api_staged = min(at(t["stagedAt"]) for t in api_tasks)
check(at(db_task["startedAt"]) < first_api_staged, f"db started {db_task['startedAt']} before api staged {first_api_staged}")
check(at(healthy_db[0].timestamp) <= first_api_staged, f"db healthy {healthy_db[0].timestamp} before api staged {first_api_staged}")
check(max(at(t["startedAt"]) for t in api_tasks) < at(web_tasks[0]["stagedAt"]), "both api tasks running before web is staged")
updates = [e for e in of_type(filtered, "status_update_event") if e.app_id in ("/shop/data/db", "/shop/api")]
first_api = next(i for i, e in enumerate(updates) if e.app_id == "/shop/api")
check(
    any(e.app_id == "/shop/data/db" and e.task_status == "TASK_RUNNING" for e in updates[:first_api]),
    "db's TASK_RUNNING event comes before api's first update",
)
check(all(e.host and e.slave_id and e.version for e in updates if e.task_status == "TASK_RUNNING"), "status_update_event fields")

# list_groups / get_group: the tree, relative ids made absolute.
root_groups = client.list_groups()
check(any(g.id == "/shop" for g in root_groups), f"list_groups {root_groups}")
g = client.get_group("/shop")
check(sorted(a.id for a in g.apps) == ["/shop/api", "/shop/web"], f"apps {g.apps}")
check([x.id for x in g.groups] == ["/shop/data"], f"groups {g.groups}")
check([a.id for a in g.groups[0].apps] == ["/shop/data/db"], "db inside /shop/data")
check(g.version, "a group version")
# Apps inside a group are ordinary apps; an app made by /v2/apps with a nested id is in the tree.
check(app_json("/shop/web")["instances"] == 1, "/v2/apps/shop/web")
solo = client.create_app("/shop/extra/solo", MarathonApp(cmd="sleep 600", cpus=0.05, mem=32, instances=1))
check(solo.id == "/shop/extra/solo", f"create_app {solo}")
until("api_post_event", lambda: [e for e in of_type(everything, "api_post_event") if e.app_definition.get("id") == "/shop/extra/solo"])
check([x.id for x in client.get_group("/shop").groups] == ["/shop/data", "/shop/extra"], "the nested app's group appears")
versions = client._do_request("GET", "/v2/groups/shop/versions").json()
check(isinstance(versions, list) and versions and versions == sorted(versions, reverse=True), f"versions {versions}")

# update_group: web's command changes (it restarts); api listed unchanged; groups left out stay.
web2 = MarathonApp(id="web", cmd="sleep 601", cpus=0.05, mem=32, instances=1, dependencies=["api"])
updated = client.update_group("/shop", MarathonGroup(id="/shop", apps=[web2, api]))
deployment_done(updated["deploymentId"])
# (The old task may still be on its way out.)
check(
    [t for t in tasks("/shop/web") if t["id"] != web_tasks[0]["id"] and t["state"] == "TASK_RUNNING" and t["version"] != web_tasks[0]["version"]],
    "web restarted",
)
check({t["id"] for t in tasks("/shop/api")} == {t["id"] for t in api_tasks}, "api untouched")
check(app_json("/shop/web")["cmd"] == "sleep 601", "web's new command")

# scale_group: every app inside, one plan.
scaled = client.scale_group("/shop", 2)
deployment_done(scaled["deploymentId"])
check(app_json("/shop/api")["instances"] == 4 and app_json("/shop/data/db")["instances"] == 2, "scaled by 2")

# An empty group with a group-level dependency (kept across a restart; the caller checks).
kept = client.create_group(MarathonGroup(id="/keep"))
deployment_done(kept["deploymentId"])
client.update_group("/keep", MarathonGroup(id="/keep", dependencies=["/elsewhere"]))
check(client.get_group("/keep").dependencies == ["/elsewhere"], "group dependencies")

# delete_group: dependents stop first.
client.delete_app("/shop/extra/solo")
until("solo gone", lambda: not [d for d in client.list_deployments() if "/shop/extra/solo" in d.affected_apps])
gone = client.delete_group("/shop")
deployment_done(gone["deploymentId"])
terminated = [e.app_id for e in of_type(filtered, "app_terminated_event") if e.app_id.startswith("/shop/") and e.app_id != "/shop/extra/solo"]
check(terminated == ["/shop/web", "/shop/api", "/shop/data/db"], f"app_terminated_event order {terminated}")
ends = [
    e
    for e in of_type(filtered, "status_update_event")
    if e.task_status in ("TASK_KILLED", "TASK_KILLING") and e.app_id in ("/shop/web", "/shop/api", "/shop/data/db")
]
order = [e.app_id for e in ends]
last_web = max(i for i, a in enumerate(order) if a == "/shop/web")
check(all(a != "/shop/api" for a in order[:last_web]), f"web stopped before api: {order}")
last_api = max(i for i, a in enumerate(order) if a == "/shop/api")
check(all(a != "/shop/data/db" for a in order[:last_api]), f"api stopped before db: {order}")
check(not [g for g in client.list_groups() if g.id == "/shop"], "/shop is gone")

# A plan that cannot finish: "never" stays unhealthy, "sick" is killed by its health check.
def failing(app_id, failures):
    check_ = MarathonHealthCheck(
        protocol="COMMAND", command="false", grace_period_seconds=0, interval_seconds=1,
        timeout_seconds=5, max_consecutive_failures=failures,
    )
    return MarathonApp(id=app_id, cmd="sleep 600", cpus=0.05, mem=32, instances=1, health_checks=[check_])


stuck = client.create_group(MarathonGroup(id="/stuck", apps=[failing("never", 0), failing("sick", 2)]))
until("unhealthy_instance_kill_event", lambda: [e for e in of_type(everything, "unhealthy_instance_kill_event") if e.app_id == "/stuck/sick"])
check([d.id for d in client.list_deployments() if d.id == stuck["deploymentId"]], "the stuck plan is listed")
try:
    changed = failing("never", 0)
    changed.cmd = "sleep 601"
    client.update_group("/stuck", MarathonGroup(id="/stuck", apps=[changed, failing("sick", 2)]))
    check(False, "a locked group was changed")
except Exception as e:  # the client's ConflictError
    check(getattr(e, "status_code", None) == 409, f"409 for a locked group: {e!r}")
until("group_change_failed", lambda: [e for e in of_type(everything, "group_change_failed") if e.group_id == "/stuck"])
# Cancel: a rollback plan (the group's apps did not exist before: they go).
rollback = client.delete_deployment(stuck["deploymentId"])
check(rollback.get("deploymentId") and rollback["deploymentId"] != stuck["deploymentId"], f"rollback reply {rollback}")
deployment_done(rollback["deploymentId"])
check(requests.get(f"{URL}/v2/apps/stuck/never", timeout=10).status_code == 404, "rolled back: the app is gone")
check([e for e in of_type(everything, "deployment_failed") if e.id == stuck["deploymentId"]], "deployment_failed")
check(of_type(everything, "deployment_step_failure"), "deployment_step_failure")
# Cancel with force: only stopped (202), the apps stay as they are.
stuck2 = client.create_group(MarathonGroup(id="/stuck2", apps=[failing("never", 0)]))
check(client.delete_deployment(stuck2["deploymentId"], force=True) == {}, "forced cancel")
until("the forced cancel", lambda: not [d for d in client.list_deployments() if d.id == stuck2["deploymentId"]])
r = requests.get(f"{URL}/v2/apps/stuck2/never", timeout=10)
check(r.status_code == 200, f"the app stays after a forced cancel: {r.status_code} {r.text[:300]}")
deployment_done(client.delete_group("/stuck2", force=True)["deploymentId"])

# The filter held; every event parsed.
check(all(e.event_type in FILTER for e in filtered), f"unfiltered types {set(e.event_type for e in filtered) - set(FILTER)}")
seen = {e.event_type for e in everything}
for kind in [
    "status_update_event",
    "instance_changed_event",
    "deployment_info",
    "deployment_step_success",
    "deployment_success",
    "group_change_success",
    "app_terminated_event",
    "api_post_event",
    "health_status_changed_event",
    "failed_health_check_event",
    "event_stream_attached",
    "event_stream_detached",
    "unhealthy_instance_kill_event",
    "group_change_failed",
    "deployment_failed",
    "deployment_step_failure",
]:
    check(kind in seen, f"{kind} on the unfiltered stream (saw {sorted(seen)})")
check(not stream_errors, f"event streams: {stream_errors}")
print(f"OK {len(everything)} events", flush=True)
