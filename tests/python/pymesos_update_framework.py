"""A pymesos framework (the community client, unchanged) that changes its FrameworkInfo with
Mesos's UPDATE_FRAMEWORK call while it stays subscribed. pymesos 0.3.x has no method for that
call, so it is sent over the driver's own HTTP session (`driver._send`, which adds the
`Mesos-Stream-Id` header and the credentials, as every pymesos call does).

    python pymesos_update_framework.py --master 127.0.0.1:5050 --updated-file F --done-file D

Subscribes as `pymesos-before` in role `*`, launches from its first offer a task and one that
asks for a SET resource (refused alone), then updates to
`pymesos-after` in role `analytics` (failover timeout, labels, capabilities changed too), checks
that an update changing `user` is refused with 400 and one naming another framework id too,
waits for an offer allocated to `analytics`, writes F, waits for D (the caller reads the master
meanwhile), and tears down. Prints one JSON summary line; exits non-zero on failure.
"""

import argparse
import json
import logging
import os
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler


class Test(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.registered_event = threading.Event()
        self.offer_before = threading.Event()
        self.offer_after = threading.Event()
        self.framework_id = None
        self.launched = False
        self.launch_outcome = threading.Event()
        self.states = {}
        self.set_message = None
        self.set_reason = None
        # Roles of the offers in the order they came, repeats folded.
        self.roles = []
        self.problem = None

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        self.registered_event.set()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if not self.launched:
                    # One ACCEPT with a plain task and one asking for a SET resource, which no
                    # agent has: that one is refused alone (TASK_ERROR), the other runs.
                    self.launched = True
                    self.roles.append(offer.get("allocation_info", {}).get("role"))
                    small = [scalar("cpus", 0.1), scalar("mem", 32)]
                    gpus = {"name": "gpu_ids", "type": "SET", "set": {"item": ["g0", "g1"]}}
                    driver.launchTasks(
                        offer["id"],
                        [
                            task(offer, "plain", small, "sleep 60"),
                            task(offer, "with-set", small + [gpus], "true"),
                        ],
                        {"refuse_seconds": 0.2},
                    )
                    self.offer_before.set()
                    continue
                role = offer.get("allocation_info", {}).get("role")
                if not self.roles or self.roles[-1] != role:
                    self.roles.append(role)
                self.offer_before.set()
                if role == "analytics":
                    self.offer_after.set()
                # Declined at once: the master may offer the agent again right away.
                driver.declineOffer([offer["id"]], {"refuse_seconds": 0.2})

    def statusUpdate(self, driver, update):
        with self.lock:
            task_id = update["task_id"]["value"]
            self.states.setdefault(task_id, []).append(update["state"])
            if task_id == "with-set":
                self.set_message = update.get("message", "")
                self.set_reason = update.get("reason", "")
            if "uuid" in update:
                driver.acknowledgeStatusUpdate(update)
            if self.states.get("with-set") and "TASK_RUNNING" in self.states.get("plain", []):
                self.launch_outcome.set()

    def error(self, driver, message):
        self.problem = "ERROR event: " + message


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def task(offer, name, resources, cmd):
    return {
        "task_id": {"value": name},
        "agent_id": offer["agent_id"],
        "name": name,
        "resources": resources,
        "command": {"value": cmd},
    }


def update_call(framework_id, info, suppressed=()):
    return {
        "type": "UPDATE_FRAMEWORK",
        "framework_id": {"value": framework_id},
        "update_framework": {
            "framework_info": info,
            "suppressed_roles": list(suppressed),
        },
    }


def refused_status(driver, body):
    """The HTTP status of a refused call (pymesos raises on any non-2xx), or None if taken."""
    try:
        driver._send(body)
        return None
    except RuntimeError as e:
        # "Failed to send request 400: …"
        return int(str(e).split("Failed to send request ", 1)[1].split(":", 1)[0])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--updated-file", required=True)
    p.add_argument("--done-file", required=True)
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sched = Test()
    framework = {
        "user": "root",
        "name": "pymesos-before",
        "hostname": "localhost",
        "failover_timeout": 0,
        "roles": ["*"],
        "capabilities": [{"type": "MULTI_ROLE"}],
    }
    driver = MesosSchedulerDriver(
        sched, framework, args.master, use_addict=False, implicit_acknowledgements=False
    )
    driver.start()
    summary = {"framework_id": None, "error": None}
    deadline = time.time() + args.timeout

    def left():
        return max(0.0, deadline - time.time())

    try:
        if not sched.registered_event.wait(left()):
            raise Exception("not subscribed")
        if not sched.offer_before.wait(left()):
            raise Exception("no offer before the update")
        if not sched.launch_outcome.wait(left()):
            raise Exception("no outcome of the launch: %r" % sched.states)
        fid = sched.framework_id
        summary["framework_id"] = fid
        new_info = {
            "id": {"value": fid},
            "user": "root",
            "name": "pymesos-after",
            "hostname": "localhost",
            "failover_timeout": 120,
            "roles": ["analytics"],
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "PARTITION_AWARE"}],
            "labels": {"labels": [{"key": "team", "value": "data"}]},
        }
        # Invalid updates first: nothing of them may be applied.
        bad_user = dict(new_info, user="nobody", name="pymesos-bad")
        summary["bad_user_status"] = refused_status(driver, update_call(fid, bad_user))
        other_id = dict(new_info, id={"value": fid + "-other"}, name="pymesos-bad")
        summary["other_id_status"] = refused_status(driver, update_call(fid, other_id))
        answer = driver._send(update_call(fid, new_info))
        summary["update_answer"] = answer
        if not sched.offer_after.wait(left()):
            raise Exception("no offer for the new role after the update")
        with open(args.updated_file, "w") as f:
            f.write(fid)
        while not os.path.exists(args.done_file):
            if left() <= 0:
                raise Exception("the caller did not finish")
            time.sleep(0.1)
    except Exception as e:  # reported in the summary
        summary["error"] = repr(e)
    with sched.lock:
        summary["offer_roles"] = list(sched.roles)
        summary["states"] = dict(sched.states)
        summary["set_message"] = sched.set_message
        summary["set_reason"] = sched.set_reason
    if sched.problem:
        summary["error"] = sched.problem
    driver.stop()  # TEARDOWN
    driver.join()
    print(json.dumps(summary))
    sys.stdout.flush()
    if summary["error"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
