"""A Mesos framework written with mesoshttp (the community client, unchanged) against an Agora
master: subscribe, decline with a filter, launch command tasks with Offer.accept, updates
acknowledged by the client, a kill, an explicit reconciliation, and a teardown. Prints one JSON
summary line; exits non-zero on failure.

    python mesoshttp_framework.py --master http://127.0.0.1:5050 [--timeout 90]

With `--failover-file PATH` (and `--master zk://host:port/mesos`: mesoshttp finds the leader in
ZooKeeper as it does Mesos's) it runs one long task instead, writes PATH once the task runs (the
caller then kills the leading master), and after mesoshttp subscribed again through ZooKeeper to
the new leader reconciles the task until that leader knows it, kills it and tears down.
"""

import argparse
import json
import logging
import sys
import threading
import time

from mesoshttp.client import MesosClient

TASKS = {"ok": "exit 0", "fail": "exit 3", "long": "sleep 300"}


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Test(object):
    def __init__(self, client, failover_file=None):
        self.client = client
        self.failover_file = failover_file
        self.subscriptions = 0
        self.masters = []
        self.failover_running = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.driver = None
        self.framework_id = None
        self.declined_at = None
        self.offer_after_decline = None
        self.launched = False
        self.states = {}
        self.reconciled = {}
        self.agent_id = None
        self.killed_sent = False
        self.problem = None
        client.on(MesosClient.SUBSCRIBED, self.subscribed)
        client.on(MesosClient.OFFERS, self.offers)
        client.on(MesosClient.UPDATE, self.update)
        client.on(MesosClient.ERROR, self.error)

    def subscribed(self, driver):
        with self.lock:
            self.driver = driver
            self.framework_id = driver.frameworkId
            self.subscriptions += 1
            self.masters.append(driver.mesos_url)
            again = self.subscriptions > 1
        if again and self.failover_file is not None:
            threading.Thread(target=self.reconcile_until_known, args=(driver,), daemon=True).start()

    def reconcile_until_known(self, driver):
        # The new leader learns of the task when its agent re-registers.
        while not self.failover_running and not self.done.is_set():
            try:
                driver.reconcile([{"task_id": {"value": "long"}}])
            except Exception:
                pass
            time.sleep(1)

    def offers(self, offers):
        with self.lock:
            for offer in offers:
                o = offer.get_offer()
                if self.declined_at is None:
                    self.declined_at = time.time()
                    offer.decline(options={"filters": {"refuse_seconds": 2}})
                    continue
                if self.offer_after_decline is None:
                    self.offer_after_decline = time.time() - self.declined_at
                if self.launched:
                    offer.decline(options={"filters": {"refuse_seconds": 3600}})
                    continue
                self.agent_id = o["agent_id"]["value"]
                wanted = {"long": TASKS["long"]} if self.failover_file else TASKS
                tasks = [
                    {
                        "name": "mesoshttp-" + name,
                        "task_id": {"value": name},
                        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                        "command": {"value": cmd},
                    }
                    for name, cmd in wanted.items()
                ]
                offer.accept(tasks, options={"filters": {"refuse_seconds": 3600}})
                self.launched = True

    def update(self, update):
        with self.lock:
            status = update["status"]
            task = status["task_id"]["value"]
            state = status["state"]
            if status.get("reason") == "REASON_RECONCILIATION":
                self.reconciled.setdefault(task, []).append(state)
            else:
                self.states.setdefault(task, []).append(state)
            if self.failover_file is not None:
                self.on_failover_update(task, state, status)
                return
            if task == "long" and state == "TASK_RUNNING" and not self.killed_sent:
                self.killed_sent = True
                self.driver.kill(self.agent_id, "long")
            if task == "long" and state == "TASK_KILLED":
                self.driver.reconcile(
                    [
                        {"task_id": {"value": "ok"}, "agent_id": {"value": self.agent_id}},
                        {"task_id": {"value": "ghost"}, "agent_id": {"value": self.agent_id}},
                    ]
                )
            # Done once the unknown task was answered and every task has ended.
            terminal = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST")
            ended = all(
                any(st in terminal for st in self.states.get(name, [])) for name in TASKS
            )
            if "ghost" in self.reconciled and ended:
                self.done.set()

    def on_failover_update(self, task, state, status):
        reconciled = status.get("reason") == "REASON_RECONCILIATION"
        if task == "long" and state == "TASK_RUNNING" and not reconciled:
            with open(self.failover_file, "w") as f:
                f.write(self.framework_id or "")
        if task == "long" and state == "TASK_RUNNING" and reconciled and self.subscriptions > 1:
            if not self.failover_running:
                self.failover_running = True
                self.driver.kill(status["agent_id"]["value"], "long")
        if task == "long" and state == "TASK_KILLED":
            self.done.set()

    def error(self, message):
        # The ERROR that closes the stream after our own TEARDOWN is expected.
        if not self.done.is_set():
            self.problem = "ERROR event: " + message
            self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--timeout", type=float, default=90)
    p.add_argument("--failover-file")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.failover_file:
        # Survive the leader's death: retry the subscription (ZooKeeper detection each time)
        # every 2 s instead of 10, until the new leader answers.
        MesosClient.WAIT_TIME = 2
        client = MesosClient(
            mesos_urls=[args.master], frameworkName="mesoshttp-test", max_reconnect=60
        )
        client.set_failover_timeout(300)
    else:
        client = MesosClient(
            mesos_urls=[args.master], frameworkName="mesoshttp-test", max_reconnect=1
        )
    test = Test(client, args.failover_file)
    registration = threading.Thread(target=client.register, daemon=True)
    registration.start()
    finished = test.done.wait(args.timeout)
    master_info = client.get_master_info()
    client.tearDown()
    if test.driver is not None:
        test.driver.tearDown()
    registration.join(30)
    summary = {
        "finished": finished,
        "framework_id": test.framework_id,
        "master_info": master_info,
        "offer_after_decline": test.offer_after_decline,
        "states": test.states,
        "reconciled": test.reconciled,
        "stream_closed": not registration.is_alive(),
        "subscriptions": test.subscriptions,
        "masters": test.masters,
        "error": test.problem,
    }
    print(json.dumps(summary))
    sys.stdout.flush()
    if not finished or test.problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
