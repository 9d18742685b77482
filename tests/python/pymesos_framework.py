"""A Mesos framework written with pymesos (the community client, unchanged) that exercises the
scheduler API of an Agora master: subscribe, decline with a filter, launch command tasks from
offers, explicit acknowledgements of RUNNING / FINISHED / FAILED, implicit and explicit
reconciliation, a kill, and a teardown. Prints one JSON summary line; exits non-zero on failure.

    python pymesos_framework.py --master 127.0.0.1:5050 [--timeout 90]

With `--failover-file PATH` (and `--master zk://…/masters`) it runs one long task instead,
writes PATH once the task runs (the caller then kills the leading master), and after pymesos
re-subscribed to the new leader reconciles the task until that leader knows it, kills it and
tears down.
"""

import argparse
import json
import logging
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

TASKS = {
    "ok": "exit 0",
    "fail": "exit 3",
    "long": "sleep 300",
}


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Test(Scheduler):
    def __init__(self, failover_file=None, idle=0.0):
        self.failover_file = failover_file
        self.idle = idle
        self.reregistrations = 0
        self.failover_running = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.framework_id = None
        self.master_info = None
        self.first_decline_at = None
        self.offer_after_decline = None
        self.launched = False
        self.states = {}
        self.reconciled = {}
        self.uuids_acked = 0
        self.killed_sent = False
        self.problem = None
        self.offer_resource_types = set()

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        self.master_info = master_info

    def reregistered(self, driver, master_info):
        with self.lock:
            self.reregistrations += 1
        if self.failover_file is None:
            return

        def reconcile_until_known():
            # The new leader learns of the task when its agent re-registers.
            while not self.failover_running and not self.done.is_set():
                try:
                    driver.reconcileTasks([{"task_id": {"value": "long"}}])
                except Exception:
                    pass
                time.sleep(1)

        threading.Thread(target=reconcile_until_known, daemon=True).start()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                for r in offer["resources"]:
                    self.offer_resource_types.add(r["type"])
                if self.first_decline_at is None:
                    # The first offer is declined with a 2 s filter: the agent must not be
                    # offered again before it expires.
                    self.first_decline_at = time.time()
                    driver.declineOffer([offer["id"]], {"refuse_seconds": 2})
                    continue
                if self.offer_after_decline is None:
                    self.offer_after_decline = time.time() - self.first_decline_at
                if self.launched:
                    driver.declineOffer([offer["id"]], {"refuse_seconds": 3600})
                    continue
                tasks = []
                wanted = {"long": TASKS["long"]} if self.failover_file else TASKS
                for name, cmd in wanted.items():
                    tasks.append(
                        {
                            "task_id": {"value": name},
                            "agent_id": offer["agent_id"],
                            "name": "pymesos-" + name,
                            "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                            "command": {"value": cmd},
                        }
                    )
                driver.launchTasks(offer["id"], tasks, {"refuse_seconds": 3600})
                self.launched = True

    def statusUpdate(self, driver, update):
        with self.lock:
            task = update["task_id"]["value"]
            state = update["state"]
            if update.get("reason") == "REASON_RECONCILIATION":
                if "uuid" in update:
                    self.problem = "a reconciliation answer carried a uuid"
                self.reconciled.setdefault(task, []).append(state)
            else:
                self.states.setdefault(task, []).append(state)
            if "uuid" in update:
                if "agent_id" not in update:
                    self.problem = "an update with a uuid had no agent_id"
                driver.acknowledgeStatusUpdate(update)
                self.uuids_acked += 1
            if self.failover_file is not None:
                self.on_failover_update(driver, task, state, update)
                return
            if task == "long" and state == "TASK_RUNNING" and "long" not in self.reconciled:
                # Implicit reconciliation: every task of the framework.
                driver.reconcileTasks([])
            if (
                task == "long"
                and state == "TASK_RUNNING"
                and update.get("reason") == "REASON_RECONCILIATION"
                and not self.killed_sent
            ):
                self.killed_sent = True
                driver.killTask({"value": "long"})
            if task == "long" and state == "TASK_KILLED":
                # Explicit reconciliation of a task the master never saw, after the driver's
                # connection sat idle for `--idle` seconds.
                threading.Timer(
                    self.idle,
                    lambda: driver.reconcileTasks([{"task_id": {"value": "ghost"}}]),
                ).start()
            # Done once the unknown task was answered and every task has ended.
            terminal = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST")
            ended = all(
                any(st in terminal for st in self.states.get(name, [])) for name in TASKS
            )
            if "ghost" in self.reconciled and ended:
                self.done.set()

    def on_failover_update(self, driver, task, state, update):
        reconciled = update.get("reason") == "REASON_RECONCILIATION"
        if task == "long" and state == "TASK_RUNNING" and not reconciled:
            with open(self.failover_file, "w") as f:
                f.write(self.framework_id or "")
        if task == "long" and state == "TASK_RUNNING" and reconciled and self.reregistrations:
            if not self.failover_running:
                self.failover_running = True
                driver.killTask({"value": "long"})
        if task == "long" and state == "TASK_KILLED":
            self.done.set()

    def error(self, driver, message):
        self.problem = "ERROR event: " + message
        self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--timeout", type=float, default=90)
    p.add_argument("--failover-file")
    p.add_argument("--idle", type=float, default=0.0)
    p.add_argument("--principal")
    p.add_argument("--secret")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sched = Test(args.failover_file, args.idle)
    framework = {
        "user": "root",
        "name": "pymesos-test",
        "hostname": "localhost",
        "failover_timeout": 300 if args.failover_file else 0,
    }
    driver = MesosSchedulerDriver(
        sched,
        framework,
        args.master,
        use_addict=False,
        implicit_acknowledgements=False,
        principal=args.principal,
        secret=args.secret,
    )
    driver.start()
    finished = sched.done.wait(args.timeout)
    version = driver.version
    driver.stop()  # not a failover: pymesos sends TEARDOWN
    driver.join()
    summary = {
        "finished": finished,
        "framework_id": sched.framework_id,
        "version": version,
        "master_info": sched.master_info,
        "offer_after_decline": sched.offer_after_decline,
        "states": sched.states,
        "reconciled": sched.reconciled,
        "acked": sched.uuids_acked,
        "reregistrations": sched.reregistrations,
        "resource_types": sorted(sched.offer_resource_types),
        "error": sched.problem,
    }
    print(json.dumps(summary))
    sys.stdout.flush()
    if not finished or sched.problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
