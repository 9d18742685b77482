"""Drives the services framework with the community's own Marathon client, PyPI `marathon`.

    python marathon_client.py http://127.0.0.1:8080      (or MARATHON_URL=…)

Every call the client exposes for apps, tasks, deployments, the queue, info, the leader and ping
is made and its typed result checked. The client builds its objects from `**kwargs`: a key it does
not know raises, so merely parsing a reply checks its shape. Exits 0 with "all checks passed", or
non-zero naming the first check that failed.
"""

import collections
import collections.abc
import datetime
import os
import sys
import time

# The client predates Python 3.10, which dropped these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import requests  # noqa: E402
from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models import MarathonApp, MarathonConstraint  # noqa: E402
from marathon.models.app import MarathonTaskStats  # noqa: E402
from marathon.models.deployment import MarathonDeployment  # noqa: E402
from marathon.models.info import MarathonInfo  # noqa: E402
from marathon.models.queue import MarathonQueueItem  # noqa: E402
from marathon.models.task import MarathonTask  # noqa: E402


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def wait_for(what, fn, timeout=60.0):
    """Polls `fn` until it returns something truthy; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (CheckFailed, MarathonHttpError) as e:
            last = e
        time.sleep(0.3)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def step(name):
    print(f"== {name}", flush=True)


def running(client, app_id, n):
    app = client.get_app(app_id)
    live = [t for t in app.tasks if t.state == "TASK_RUNNING"]
    return app if app.tasks_running == n and len(live) == n and not app.deployments else None


def check_task(t, app_id):
    check(isinstance(t, MarathonTask), f"a task is a MarathonTask: {t!r}")
    check(t.app_id == app_id, f"task {t.id} has appId {app_id}: {t.app_id}")
    check(t.id.startswith(app_id.strip("/").replace("/", "_") + "."), f"task id {t.id} names its app")
    check(bool(t.slave_id), f"task {t.id} has a slaveId")
    check(bool(t.host), f"task {t.id} has a host")
    check(isinstance(t.staged_at, datetime.datetime), f"task {t.id} stagedAt is a time")
    check(bool(t.version), f"task {t.id} has a version")
    check(t.state.startswith("TASK_"), f"task {t.id} state: {t.state}")
    check(isinstance(t.service_ports, list), f"task {t.id} servicePorts is a list")
    check(
        all(a.ip_address for a in t.ip_addresses),
        f"task {t.id} ipAddresses carry addresses: {t.ip_addresses!r}",
    )
    if t.state == "TASK_RUNNING":
        check(isinstance(t.started_at, datetime.datetime), f"running task {t.id} has startedAt")


def main():
    url = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MARATHON_URL", "")).rstrip("/")
    check(url, "usage: marathon_client.py URL (or MARATHON_URL)")
    client = MarathonClient(url, timeout=20)
    web, other, uniq = "/wire/web", "/wire/other", "/wire/uniq"

    step("ping, get_leader, get_info")
    check(client.ping().strip() == b"pong", "ping answers pong")
    leader = client.get_leader()
    check(isinstance(leader, dict) and leader.get("leader"), f"get_leader names one: {leader}")
    port = int(url.rsplit(":", 1)[1])
    check(leader["leader"].endswith(f":{port}"), f"the leader is this instance: {leader}")
    info = wait_for("a framework id in /v2/info", lambda: (lambda i: i if i.framework_id else None)(client.get_info()))
    check(isinstance(info, MarathonInfo), "get_info gives a MarathonInfo")
    check(info.elected is True and info.leader == leader["leader"], f"info names the leader: {info.leader}")
    # (The client takes `framework_name` but keeps no attribute for it.)
    check(info.marathon_config.mesos_role and info.marathon_config.hostname, "marathon_config has role and hostname")
    check(info.marathon_config.failover_timeout is not None, "marathon_config has the failover timeout")
    check(info.marathon_config.master, "marathon_config has the master")
    check(info.http_config.http_port == port, f"http_config.http_port is {port}: {info.http_config.http_port}")
    check(info.zookeeper_config.zk_max_versions, "zookeeper_config says how many versions are kept")
    check(info.version and info.name and info.buildref, "info has name, version, buildref")

    step("create_app")
    created = client.create_app(
        web,
        MarathonApp(cmd="sleep 1000", cpus=0.1, mem=32, instances=2, labels={"team": "wire", "tier": "web"}),
    )
    check(isinstance(created, MarathonApp) and created.id == web, f"create_app returns the app: {created!r}")
    check(created.deployments, "the created app names its deployment")
    check(created.tasks_running == 0 and created.version, "a new app has no tasks yet and a version")
    try:
        client.create_app(web, MarathonApp(cmd="sleep 1", cpus=0.1, mem=32))
        raise CheckFailed("creating an existing app must fail")
    except ConflictError:
        pass
    client.create_app(other, MarathonApp(cmd="sleep 2000", cpus=0.1, mem=32, instances=1, labels={"team": "other"}))
    wait_for("2 running tasks of /wire/web", lambda: running(client, web, 2))
    wait_for("1 running task of /wire/other", lambda: running(client, other, 1))

    step("get_app with every embed")
    app = client.get_app(
        web, embed_tasks=True, embed_counts=True, embed_deployments=True, embed_readiness=True,
        embed_last_task_failure=True, embed_failures=True, embed_task_stats=True,
    )
    check(app.cmd == "sleep 1000" and app.instances == 2 and app.labels.get("team") == "wire", f"get_app: {app!r}")
    check(len(app.tasks) == 2, f"two tasks embedded: {app.tasks!r}")
    for t in app.tasks:
        check_task(t, web)
    check(app.tasks_running == 2 and app.tasks_staged == 0, "counts: 2 running, 0 staged")
    check(app.version_info and isinstance(app.version_info.last_config_change_at, datetime.datetime),
          "versionInfo has lastConfigChangeAt")
    check(isinstance(app.task_stats, MarathonTaskStats), f"taskStats embedded: {app.task_stats!r}")
    check(app.task_stats.total_summary.stats.counts.running == 2, "taskStats count 2 running tasks")
    check(app.task_stats.total_summary.stats.life_time.average_seconds >= 0, "taskStats has life times")
    check(app.readiness_check_results == [], "readinessCheckResults embedded (none)")
    check(app.upgrade_strategy.minimum_health_capacity == 1, "upgradeStrategy is Marathon's default")

    step("list_apps with embeds and filters")
    apps = client.list_apps()
    ids = sorted(a.id for a in apps)
    check(ids == [other, web], f"list_apps lists both apps: {ids}")
    check(all(a.tasks == [] and a.tasks_running is not None for a in apps), "list_apps has counts, no tasks")
    embedded = client.list_apps(
        embed_tasks=True, embed_counts=True, embed_deployments=True, embed_readiness=True,
        embed_last_task_failure=True, embed_failures=True, embed_task_stats=True,
    )
    for a in embedded:
        check(len(a.tasks) == a.instances, f"{a.id}: tasks embedded ({len(a.tasks)} of {a.instances})")
        for t in a.tasks:
            check_task(t, a.id)
        check(a.task_stats is not None, f"{a.id}: taskStats embedded")
    check([a.id for a in client.list_apps(cmd="SLEEP 1000")] == [web], "cmd filter (case-insensitive)")
    check(client.list_apps(cmd="nothing like it") == [], "cmd filter matching nothing")
    check(sorted(a.id for a in client.list_apps(app_id="wire/")) == [other, web], "id filter (substring)")
    check([a.id for a in client.list_apps(app_id="OTH")] == [other], "id filter (case-insensitive)")
    check([a.id for a in client.list_apps(label="team==wire")] == [web], "label ==")
    check([a.id for a in client.list_apps(label="team!=wire")] == [other], "label !=")
    check([a.id for a in client.list_apps(label="tier")] == [web], "label exists")
    check(sorted(a.id for a in client.list_apps(label="team in (wire, other)")) == [other, web], "label in")
    check([a.id for a in client.list_apps(label="team notin (wire)")] == [other], "label notin")
    check([a.id for a in client.list_apps(instances=1)] == [other], "client-side kwargs filter")

    step("list_tasks and the text/plain task list")
    tasks = client.list_tasks()
    check(len(tasks) == 3, f"list_tasks lists 3 tasks: {tasks!r}")
    for t in tasks:
        check_task(t, t.app_id)
    web_tasks = client.list_tasks(web)
    check(sorted(t.id for t in web_tasks) == sorted(t.id for t in app.tasks), "list_tasks(app) lists the app's")
    check(len(client.list_tasks(web, host=web_tasks[0].host)) >= 1, "list_tasks with a kwargs filter")
    r = requests.get(f"{url}/v2/tasks", params={"status": "running"}, headers={"Accept": "application/json"}, timeout=20)
    check(r.status_code == 200 and len(r.json()["tasks"]) == 3, f"status=running: {r.text}")
    r = requests.get(f"{url}/v2/tasks", params={"status": "staging"}, headers={"Accept": "application/json"}, timeout=20)
    check(r.status_code == 200 and r.json()["tasks"] == [], f"status=staging: {r.text}")
    for path in ("/v2/tasks", "/v2/apps/wire/web/tasks"):
        r = requests.get(f"{url}{path}", headers={"Accept": "text/plain"}, timeout=20)
        check(r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), f"{path} text/plain: {r.headers}")
        lines = [line for line in r.text.split("\n") if line.startswith("wire_web\t")]
        check(lines, f"{path}: a line for wire_web: {r.text!r}")
        for line in lines:
            _, service_port, rest = line.split("\t", 2)
            if service_port == " ":
                hosts = sorted(rest.split())
                expect = sorted(t.host for t in web_tasks)
            else:
                hosts = sorted(h for h in rest.split("\t") if h)
                i = lines.index(line)
                expect = sorted(f"{t.host}:{t.ports[i] if i < len(t.ports) else 0}" for t in web_tasks)
                check(int(service_port) > 0, f"{path}: a service port: {line!r}")
            check(hosts == expect, f"{path}: the running tasks' endpoints {expect}: {line!r}")
        if path == "/v2/tasks":
            check(any(line.startswith("wire_other\t") for line in r.text.split("\n")), "a line for wire_other")

    step("update_app, list_versions, get_version, rollback")
    first_version = client.get_app(web).version
    result = client.update_app(web, MarathonApp(cmd="sleep 1001", cpus=0.1, mem=32, instances=2))
    check(result.get("deploymentId") and result.get("version"), f"update_app: {result}")
    updated = wait_for("the update rolled out", lambda: (lambda a: a if a and all(t.version == result["version"] for t in a.tasks) else None)(running(client, web, 2)))
    check(updated.cmd == "sleep 1001", "the update changed cmd")
    versions = client.list_versions(web)
    check(isinstance(versions, list) and len(versions) >= 2, f"list_versions: {versions}")
    check(versions[0] == result["version"] and first_version in versions, f"newest first, the first kept: {versions}")
    old = client.get_version(web, first_version)
    check(isinstance(old, MarathonApp) and old.cmd == "sleep 1000" and old.version == first_version, f"get_version: {old!r}")
    try:
        client.get_version(web, "2001-01-01T00:00:00.000Z")
        raise CheckFailed("an unknown version must be a 404")
    except NotFoundError:
        pass
    back = client.rollback_app(web, first_version)
    check(back.get("deploymentId") and back.get("version"), f"rollback_app: {back}")
    rolled = wait_for("the rollback rolled out", lambda: (lambda a: a if a and all(t.version == back["version"] for t in a.tasks) else None)(running(client, web, 2)))
    check(rolled.cmd == "sleep 1000", f"the rollback restored cmd: {rolled.cmd}")
    try:
        client.rollback_app(web, "2001-01-01T00:00:00.000Z")
        raise CheckFailed("a rollback to an unknown version must be a 404")
    except NotFoundError:
        pass

    step("scale_app by instances and by delta")
    r = client.scale_app(web, instances=3)
    check(r.get("deploymentId"), f"scale_app: {r}")
    wait_for("3 running tasks", lambda: running(client, web, 3))
    client.scale_app(web, delta=-2)
    wait_for("1 running task after delta -2", lambda: running(client, web, 1))
    client.scale_app(web, delta=1)
    wait_for("2 running tasks after delta +1", lambda: running(client, web, 2))
    check(client.get_app(web).cmd == "sleep 1000", "scaling keeps the rest of the app")

    step("kill_task, kill_tasks, kill_given_tasks")
    victim = client.get_app(web).tasks[0]
    killed = client.kill_task(web, victim.id)
    check(isinstance(killed, MarathonTask) and killed.id == victim.id, f"kill_task returns the task: {killed!r}")
    wait_for("the killed task replaced", lambda: (lambda a: a if a and victim.id not in [t.id for t in a.tasks] else None)(running(client, web, 2)))
    try:
        client.kill_task(web, "wire_web.no-such-task")
        raise CheckFailed("killing an unknown task must be a 404")
    except NotFoundError:
        pass
    victim = client.get_app(web).tasks[0]
    r = client.kill_task(web, victim.id, scale=True)
    check(isinstance(r, dict) and r.get("deploymentId"), f"kill_task(scale=True) gives the deployment: {r}")
    after = wait_for("1 task after a kill with scale", lambda: running(client, web, 1))
    check(after.instances == 1 and victim.id not in [t.id for t in after.tasks], "scale=True lowered instances")
    client.scale_app(web, instances=2)
    app = wait_for("2 running tasks again", lambda: running(client, web, 2))
    host = app.tasks[0].host
    on_host = sorted(t.id for t in app.tasks if t.host == host)
    killed = client.kill_tasks(web, host=host)
    check(sorted(t.id for t in killed) == on_host, f"kill_tasks(host) kills that host's tasks: {killed!r}")
    app = wait_for("the host's tasks replaced", lambda: (lambda a: a if a and not set(on_host) & {t.id for t in a.tasks} else None)(running(client, web, 2)))
    killed = client.kill_tasks(web)
    check(len(killed) == 2 and all(isinstance(t, MarathonTask) for t in killed), f"kill_tasks kills all: {killed!r}")
    app = wait_for("all tasks replaced", lambda: (lambda a: a if a and not {t.id for t in killed} & {t.id for t in a.tasks} else None)(running(client, web, 2)))
    r = client.kill_tasks(web, scale=True)
    check(isinstance(r, dict) and r.get("deploymentId"), f"kill_tasks(scale=True) gives the deployment: {r}")
    wait_for("no task after kill_tasks(scale=True)", lambda: running(client, web, 0))
    check(client.get_app(web).instances == 0, "kill_tasks(scale=True) scaled to 0")
    try:
        client.kill_tasks(web, scale=True, wipe=True)
        raise CheckFailed("scale and wipe together must be refused")
    except MarathonHttpError as e:
        check(e.status_code == 400, f"scale+wipe is a 400: {e}")
    client.scale_app(web, instances=2)
    app = wait_for("2 running tasks for kill_given_tasks", lambda: running(client, web, 2))
    given = [app.tasks[0].id]
    check(client.kill_given_tasks(given) is True, "kill_given_tasks answers 200")
    wait_for("the given task replaced", lambda: (lambda a: a if a and given[0] not in [t.id for t in a.tasks] else None)(running(client, web, 2)))
    app = client.get_app(web)
    check(client.kill_given_tasks([app.tasks[0].id, "wire_web.unknown"], scale=True) is True, "kill_given_tasks(scale=True)")
    wait_for("1 task after kill_given_tasks(scale=True)", lambda: running(client, web, 1))
    check(client.get_app(web).instances == 1, "kill_given_tasks(scale=True) scaled down by 1")

    step("restart_app")
    before = {t.id for t in client.get_app(web).tasks}
    r = client.restart_app(web)
    check(r.get("deploymentId") and r.get("version"), f"restart_app: {r}")
    wait_for("the restart replaced the task", lambda: (lambda a: a if a and not before & {t.id for t in a.tasks} else None)(running(client, web, 1)))
    check(r["version"] in client.list_versions(web), "a restart is a stored version")

    step("list_deployments, delete_deployment")
    client.create_app(uniq, MarathonApp(cmd="sleep 1000", cpus=0.1, mem=32, instances=2,
                                        constraints=[MarathonConstraint("hostname", "UNIQUE")]))
    wait_for("2 running tasks of /wire/uniq", lambda: running(client, uniq, 2))
    stuck = client.scale_app(uniq, instances=3)  # two agents: the third cannot be placed
    deployments = client.list_deployments()
    check(all(isinstance(d, MarathonDeployment) for d in deployments), "list_deployments gives deployments")
    mine = [d for d in deployments if uniq in d.affected_apps]
    check(len(mine) == 1 and mine[0].id == stuck["deploymentId"], f"the stuck deployment is listed: {deployments!r}")
    rollback = client.delete_deployment(stuck["deploymentId"])
    check(rollback.get("deploymentId") and rollback["deploymentId"] != stuck["deploymentId"], f"delete_deployment rolls back: {rollback}")
    wait_for("the rollback to 2 instances", lambda: (lambda a: a if a and a.instances == 2 else None)(running(client, uniq, 2)))
    stuck = client.scale_app(uniq, instances=3)
    check(client.delete_deployment(stuck["deploymentId"], force=True) == {}, "delete_deployment(force=True)")
    wait_for("the forced cancel to forget the deployment",
             lambda: not [d for d in client.list_deployments() if d.id == stuck["deploymentId"]])
    check(client.get_app(uniq).instances == 3, "a forced cancel keeps the new instance count")
    try:
        client.delete_deployment("no-such-deployment")
        raise CheckFailed("an unknown deployment must be a 404")
    except NotFoundError:
        pass

    step("status codes and bodies the client does not look at")
    json_headers = {"Accept": "application/json", "Content-Type": "application/json"}
    version = client.list_versions(uniq)[-1]
    r = requests.put(f"{url}/v2/apps/wire/uniq", json={"version": version, "cmd": "sleep 1"}, headers=json_headers, timeout=20)
    check(r.status_code == 422 and r.json()["details"][0]["errors"] == ["The 'version' field may only be combined with the 'id' field."],
          f"a rollback with other fields is a 422: {r.status_code} {r.text}")
    r = requests.post(f"{url}/v2/tasks/delete", json={"ids": ["no-dot"]}, headers=json_headers, timeout=20)
    check(r.status_code == 400 and "no-dot" in r.json()["message"], f"a malformed task id is a 400: {r.status_code} {r.text}")
    r = requests.post(f"{url}/v2/apps/wire/web/restart", params={"force": "true"}, headers=json_headers, timeout=20)
    check(r.status_code == 200 and r.headers.get("Marathon-Deployment-Id") == r.json()["deploymentId"],
          f"a restart names its deployment in Marathon-Deployment-Id: {r.status_code} {r.headers}")
    wait_for("the restart of /wire/web to finish", lambda: running(client, web, 1))
    r = requests.put(f"{url}/v2/apps/wire/uniq", params={"force": "true"}, json={"version": version}, headers=json_headers, timeout=20)
    check(r.status_code == 200 and r.headers.get("Marathon-Deployment-Id"), f"a rollback by PUT: {r.status_code} {r.text}")
    check(client.get_app(uniq).instances == 2, "the rollback restored the first version's 2 instances")
    client.scale_app(uniq, instances=3, force=True)

    step("delete_app")
    for app_id in (web, other):
        r = client.delete_app(app_id)
        check(r.get("deploymentId") and r.get("version"), f"delete_app: {r}")
        try:
            client.get_app(app_id)
            raise CheckFailed(f"{app_id} is still there after delete_app")
        except NotFoundError:
            pass

    step("list_queue")
    # /wire/uniq wants 3 instances on 2 agents: one waits in the queue.
    queue = wait_for("the waiting instance in the queue", lambda: [q for q in client.list_queue() if q.app.id == uniq])
    check(isinstance(queue[0], MarathonQueueItem) and queue[0].count == 1, f"list_queue: {queue!r}")
    check(queue[0].delay is not None, "a queue item has its delay")
    # Its scale to 3 is still deploying: only a forced delete goes through.
    try:
        client.delete_app(uniq)
        raise CheckFailed("deleting an app that is deploying must be a 409 without force")
    except ConflictError:
        pass
    check(client.delete_app(uniq, force=True).get("deploymentId"), "delete_app(force=True) of the queued app")
    wait_for("every task gone", lambda: client.list_tasks() == [] or None)
    check(client.list_apps() == [], "no apps left")
    check(client.list_queue() == [], "nothing queued")
    print("all checks passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # a client that raised on a reply: the shape is wrong
        import traceback

        traceback.print_exc()
        print(f"FAILED: the client raised {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
