#!/usr/bin/env python3
"""A whole Agora framework in Python, written from proto/ alone with grpcio.

Launches N shell tasks, prints every status update, exits 0 when all finished and
non-zero (with the reason) if one fails. See README.md for the two commands.
"""
import argparse
import sys
import threading
import uuid

import grpc

import agora_pb2 as pb
import agora_pb2_grpc as rpc


def scalar(resources, name):
    return sum(r.scalar for r in resources if r.name == name and r.WhichOneof("value") == "scalar")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", default="127.0.0.1:5050", help="host:port of the leading master")
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--cmd", default="echo hello from python")
    p.add_argument("--cpus", type=float, default=0.1)
    p.add_argument("--mem", type=float, default=32)
    args = p.parse_args()

    channel = grpc.insecure_channel(args.master)
    scheduler = rpc.SchedulerStub(channel)
    info = pb.FrameworkInfo(name="hello-python", roles=["*"],
                            capabilities=[pb.PARTITION_AWARE])
    events = scheduler.Subscribe(pb.SubscribeRequest(framework_info=info))
    header = None
    launched, finished = 0, set()
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "subscribed":
            header = pb.CallHeader(framework_id=event.subscribed.framework_id,
                                   stream_id=event.subscribed.stream_id)
            print("subscribed as", header.framework_id, flush=True)
        elif kind == "offers":
            for offer in event.offers.offers:
                cpus, mem = scalar(offer.resources, "cpus"), scalar(offer.resources, "mem")
                tasks = []
                while (launched + len(tasks) < args.tasks and cpus >= args.cpus and mem >= args.mem):
                    cpus, mem = cpus - args.cpus, mem - args.mem
                    task_id = "hello-py." + uuid.uuid4().hex[:12]
                    tasks.append(pb.TaskInfo(
                        name=task_id, task_id=task_id, agent_id=offer.agent_id,
                        resources=[pb.Resource(name="cpus", scalar=args.cpus),
                                   pb.Resource(name="mem", scalar=args.mem)],
                        command=pb.CommandInfo(shell=True, value=args.cmd)))
                if not tasks:
                    # Nothing to run here: decline with a long filter (good offer etiquette).
                    scheduler.Decline(pb.DeclineRequest(header=header, offer_ids=[offer.id],
                                                        filters=pb.Filters(refuse_seconds=30)))
                    continue
                launched += len(tasks)
                scheduler.Accept(pb.AcceptRequest(
                    header=header, offer_ids=[offer.id],
                    operations=[pb.Operation(launch=pb.Operation.Launch(tasks=tasks))]))
                if launched == args.tasks:
                    scheduler.Suppress(pb.SuppressRequest(header=header))
        elif kind == "update":
            status = event.update.status
            state = pb.TaskState.Name(status.state)
            print(status.task_id, state, status.message, flush=True)
            if status.uuid:
                scheduler.Acknowledge(pb.AcknowledgeRequest(
                    header=header, agent_id=status.agent_id, task_id=status.task_id,
                    uuid=status.uuid))
            if state == "TASK_FINISHED":
                finished.add(status.task_id)
                if len(finished) == args.tasks:
                    print("all %d tasks finished" % args.tasks, flush=True)
                    scheduler.Teardown(pb.TeardownRequest(header=header))
                    return 0
            elif state in ("TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST",
                           "TASK_DROPPED", "TASK_GONE"):
                print("task %s ended %s: %s" % (status.task_id, state, status.message),
                      file=sys.stderr)
                scheduler.Teardown(pb.TeardownRequest(header=header))
                return 1
        elif kind == "error":
            print("the master closed the subscription:", event.error.message, file=sys.stderr)
            return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
