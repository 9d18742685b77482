"""A Mesos framework and operator client speaking `application/x-protobuf` to an Agora master,
with Google's protobuf runtime (PyPI `protobuf`) and message descriptors built here from Apache
Mesos's documented field numbers (mesos/v1/mesos.proto, scheduler/scheduler.proto,
master/master.proto), independently of Agora's own .proto files. Enums are read and written as
their numbers.

SUBSCRIBE (RecordIO stream of protobuf Events) -> SUBSCRIBED + HEARTBEAT -> OFFERS -> ACCEPT
with one LAUNCH -> UPDATEs acknowledged -> TASK_FINISHED; then the operator API's GET_STATE and
GET_HEALTH over protobuf, and TEARDOWN. Prints one JSON summary line; exits non-zero on failure.

    python mesos_protobuf.py --master 127.0.0.1:5050 [--timeout 60]
"""

import argparse
import http.client
import json
import sys
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
KINDS = {
    "string": F.TYPE_STRING,
    "bytes": F.TYPE_BYTES,
    "bool": F.TYPE_BOOL,
    "double": F.TYPE_DOUBLE,
    "int32": F.TYPE_INT32,
    "uint32": F.TYPE_UINT32,
    "int64": F.TYPE_INT64,
    "uint64": F.TYPE_UINT64,
    "enum": F.TYPE_INT32,  # an enum is a varint on the wire
}

# name -> [(field, number, kind or message name, repeated?)]
MESSAGES = {
    "ID": [("value", 1, "string", False)],
    "Address": [("hostname", 1, "string", False), ("ip", 2, "string", False), ("port", 3, "int32", False)],
    "MasterInfo": [
        ("id", 1, "string", False), ("ip", 2, "uint32", False), ("port", 3, "uint32", False),
        ("pid", 4, "string", False), ("hostname", 5, "string", False),
        ("version", 6, "string", False), ("address", 7, "Address", False),
    ],
    "Capability": [("type", 1, "enum", False)],
    "FrameworkInfo": [
        ("user", 1, "string", False), ("name", 2, "string", False), ("id", 3, "ID", False),
        ("failover_timeout", 4, "double", False), ("hostname", 7, "string", False),
        ("roles", 12, "string", True), ("capabilities", 10, "Capability", True),
    ],
    "Scalar": [("value", 1, "double", False)],
    "AllocationInfo": [("role", 1, "string", False)],
    "Resource": [
        ("name", 1, "string", False), ("type", 2, "enum", False), ("scalar", 3, "Scalar", False),
        ("allocation_info", 11, "AllocationInfo", False),
    ],
    "CommandInfo": [("value", 3, "string", False), ("shell", 6, "bool", False)],
    "TaskInfo": [
        ("name", 1, "string", False), ("task_id", 2, "ID", False), ("agent_id", 3, "ID", False),
        ("resources", 4, "Resource", True), ("command", 7, "CommandInfo", False),
    ],
    "Offer": [
        ("id", 1, "ID", False), ("framework_id", 2, "ID", False), ("agent_id", 3, "ID", False),
        ("hostname", 4, "string", False), ("resources", 5, "Resource", True),
        ("allocation_info", 10, "AllocationInfo", False),
    ],
    "Launch": [("task_infos", 1, "TaskInfo", True)],
    "Operation": [("type", 1, "enum", False), ("launch", 2, "Launch", False)],
    "Filters": [("refuse_seconds", 1, "double", False)],
    "TaskStatus": [
        ("task_id", 1, "ID", False), ("state", 2, "enum", False), ("message", 4, "string", False),
        ("source", 9, "enum", False), ("reason", 10, "enum", False),
        ("agent_id", 5, "ID", False), ("timestamp", 6, "double", False),
        ("uuid", 11, "bytes", False),
    ],
    # scheduler.Call
    "Subscribe": [("framework_info", 1, "FrameworkInfo", False)],
    "Accept": [
        ("offer_ids", 1, "ID", True), ("operations", 2, "Operation", True),
        ("filters", 3, "Filters", False),
    ],
    "Decline": [("offer_ids", 1, "ID", True), ("filters", 2, "Filters", False)],
    "Acknowledge": [("agent_id", 1, "ID", False), ("task_id", 2, "ID", False), ("uuid", 3, "bytes", False)],
    "Call": [
        ("framework_id", 1, "ID", False), ("type", 2, "enum", False),
        ("subscribe", 3, "Subscribe", False), ("accept", 4, "Accept", False),
        ("decline", 5, "Decline", False), ("acknowledge", 8, "Acknowledge", False),
    ],
    # scheduler.Event
    "Subscribed": [
        ("framework_id", 1, "ID", False), ("heartbeat_interval_seconds", 2, "double", False),
        ("master_info", 3, "MasterInfo", False),
    ],
    "Offers": [("offers", 1, "Offer", True)],
    "Update": [("status", 1, "TaskStatus", False)],
    "Error": [("message", 1, "string", False)],
    "Event": [
        ("type", 1, "enum", False), ("subscribed", 2, "Subscribed", False),
        ("offers", 3, "Offers", False), ("update", 5, "Update", False),
        ("error", 8, "Error", False),
    ],
    # master.Call / master.Response
    "OperatorCall": [("type", 1, "enum", False)],
    "TimeInfo": [("nanoseconds", 1, "int64", False)],
    "Task": [
        ("name", 1, "string", False), ("task_id", 2, "ID", False),
        ("framework_id", 3, "ID", False), ("agent_id", 5, "ID", False),
        ("state", 6, "enum", False), ("statuses", 8, "TaskStatus", True),
    ],
    "GetTasks": [("tasks", 2, "Task", True), ("completed_tasks", 3, "Task", True)],
    "Framework": [
        ("framework_info", 1, "FrameworkInfo", False), ("active", 2, "bool", False),
        ("connected", 3, "bool", False), ("registered_time", 4, "TimeInfo", False),
    ],
    "GetFrameworks": [("frameworks", 1, "Framework", True)],
    "AgentInfo": [("hostname", 1, "string", False), ("id", 6, "ID", False), ("resources", 3, "Resource", True)],
    "Agent": [
        ("agent_info", 1, "AgentInfo", False), ("active", 2, "bool", False),
        ("version", 3, "string", False), ("total_resources", 7, "Resource", True),
    ],
    "GetAgents": [("agents", 1, "Agent", True)],
    "GetState": [
        ("get_tasks", 1, "GetTasks", False), ("get_frameworks", 3, "GetFrameworks", False),
        ("get_agents", 4, "GetAgents", False),
    ],
    "GetHealth": [("healthy", 1, "bool", False)],
    "Response": [
        ("type", 1, "enum", False), ("get_health", 2, "GetHealth", False),
        ("get_state", 9, "GetState", False),
    ],
}

# Enum numbers (Mesos's).
SUBSCRIBE, TEARDOWN, ACCEPT, DECLINE, ACKNOWLEDGE = 1, 2, 3, 4, 8
EV_SUBSCRIBED, EV_OFFERS, EV_UPDATE, EV_ERROR, EV_HEARTBEAT = 1, 2, 4, 7, 8
SCALAR = 0
LAUNCH = 1
TASK_RUNNING, TASK_FINISHED = 1, 2
MULTI_ROLE = 6
OP_GET_HEALTH, OP_GET_STATE = 1, 9
RESP_GET_HEALTH, RESP_GET_STATE = 1, 8


def classes():
    f = descriptor_pb2.FileDescriptorProto(name="mesos_by_hand.proto", package="t", syntax="proto2")
    for name, fields in MESSAGES.items():
        m = f.message_type.add(name=name)
        for fname, number, kind, repeated in fields:
            fd = m.field.add(name=fname, number=number)
            fd.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if kind in KINDS:
                fd.type = KINDS[kind]
            else:
                fd.type = F.TYPE_MESSAGE
                fd.type_name = ".t." + kind
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName("t." + name))
        for name in MESSAGES
    }


M = classes()
PB = "application/x-protobuf"


def read_record(resp):
    """One RecordIO record: `<length>\\n<bytes>`."""
    length = b""
    while True:
        c = resp.read(1)
        if not c:
            return None
        if c == b"\n":
            break
        length += c
    n = int(length)
    data = b""
    while len(data) < n:
        chunk = resp.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    event = M["Event"]()
    event.ParseFromString(data)
    return event


class Calls(object):
    """Scheduler calls on one kept-alive connection, as Mesos clients make them."""

    def __init__(self, host, port, stream_id):
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.stream_id = stream_id

    def post(self, call):
        self.conn.request(
            "POST",
            "/api/v1/scheduler",
            body=call.SerializeToString(),
            headers={"Content-Type": PB, "Mesos-Stream-Id": self.stream_id},
        )
        resp = resp_body = None
        resp = self.conn.getresponse()
        resp_body = resp.read()
        if resp.status != 202:
            raise RuntimeError("call %d answered %d: %r" % (call.type, resp.status, resp_body))


def operator(host, port, kind):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(
        "POST",
        "/api/v1",
        body=M["OperatorCall"](type=kind).SerializeToString(),
        headers={"Content-Type": PB, "Accept": PB},
    )
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200 or resp.getheader("Content-Type") != PB:
        raise RuntimeError("operator call %d answered %d %s: %r" % (
            kind, resp.status, resp.getheader("Content-Type"), body))
    r = M["Response"]()
    r.ParseFromString(body)
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    host, port = args.master.rsplit(":", 1)
    port = int(port)
    deadline = time.time() + args.timeout
    summary = {"events": [], "states": [], "acked": 0, "error": None}

    call = M["Call"](type=SUBSCRIBE)
    info = call.subscribe.framework_info
    info.user, info.name, info.failover_timeout = "root", "protobuf-test", 0
    info.roles.append("pb")
    info.capabilities.add(type=MULTI_ROLE)
    stream = http.client.HTTPConnection(host, port, timeout=args.timeout)
    stream.request(
        "POST", "/api/v1/scheduler", body=call.SerializeToString(),
        headers={"Content-Type": PB, "Accept": PB},
    )
    resp = stream.getresponse()
    summary["subscribe_status"] = resp.status
    summary["content_type"] = resp.getheader("Content-Type")
    if resp.status != 200:
        summary["error"] = "SUBSCRIBE answered %d: %r" % (resp.status, resp.read())
        print(json.dumps(summary))
        sys.exit(1)
    calls = Calls(host, port, resp.getheader("Mesos-Stream-Id"))
    framework_id = None
    launched = False
    finished = False
    try:
        while time.time() < deadline and not finished:
            event = read_record(resp)
            if event is None:
                raise RuntimeError("the event stream ended")
            summary["events"].append(event.type)
            if event.type == EV_SUBSCRIBED:
                framework_id = event.subscribed.framework_id.value
                summary["framework_id"] = framework_id
                summary["heartbeat"] = event.subscribed.heartbeat_interval_seconds
                summary["master_port"] = event.subscribed.master_info.address.port
                summary["master_pid"] = event.subscribed.master_info.pid
            elif event.type == EV_OFFERS:
                offers = list(event.offers.offers)
                if launched:
                    d = M["Call"](type=DECLINE)
                    d.framework_id.value = framework_id
                    for o in offers:
                        d.decline.offer_ids.add(value=o.id.value)
                    d.decline.filters.refuse_seconds = 3600
                    calls.post(d)
                    continue
                offer = offers[0]
                summary["offer_cpus"] = sum(
                    r.scalar.value for r in offer.resources if r.name == "cpus")
                a = M["Call"](type=ACCEPT)
                a.framework_id.value = framework_id
                a.accept.offer_ids.add(value=offer.id.value)
                op = a.accept.operations.add(type=LAUNCH)
                task = op.launch.task_infos.add(name="pb-task")
                task.task_id.value = "pb-task"
                task.agent_id.value = offer.agent_id.value
                for name, value in (("cpus", 0.1), ("mem", 32.0)):
                    r = task.resources.add(name=name, type=SCALAR)
                    r.scalar.value = value
                    r.allocation_info.role = offer.allocation_info.role
                task.command.value = "exit 0"
                task.command.shell = True
                calls.post(a)
                launched = True
            elif event.type == EV_UPDATE:
                st = event.update.status
                summary["states"].append(st.state)
                if st.HasField("uuid"):
                    ack = M["Call"](type=ACKNOWLEDGE)
                    ack.framework_id.value = framework_id
                    ack.acknowledge.agent_id.value = st.agent_id.value
                    ack.acknowledge.task_id.value = st.task_id.value
                    ack.acknowledge.uuid = st.uuid
                    calls.post(ack)
                    summary["acked"] += 1
                if st.task_id.value == "pb-task" and st.state == TASK_FINISHED:
                    finished = True
            elif event.type == EV_ERROR:
                raise RuntimeError("ERROR event: " + event.error.message)
        summary["finished"] = finished

        health = operator(host, port, OP_GET_HEALTH)
        summary["health"] = {"type": health.type, "healthy": health.get_health.healthy}
        state = operator(host, port, OP_GET_STATE)
        gs = state.get_state
        summary["state_type"] = state.type
        summary["tasks"] = [
            {"id": t.task_id.value, "state": t.state, "framework_id": t.framework_id.value,
             "agent_id": t.agent_id.value}
            for t in list(gs.get_tasks.tasks) + list(gs.get_tasks.completed_tasks)
        ]
        summary["frameworks"] = [
            {"id": f.framework_info.id.value, "name": f.framework_info.name,
             "roles": list(f.framework_info.roles), "connected": f.connected}
            for f in gs.get_frameworks.frameworks
        ]
        summary["agents"] = [
            {"id": a.agent_info.id.value, "hostname": a.agent_info.hostname, "active": a.active,
             "cpus": sum(r.scalar.value for r in a.total_resources if r.name == "cpus")}
            for a in gs.get_agents.agents
        ]

        t = M["Call"](type=TEARDOWN)
        t.framework_id.value = framework_id
        calls.post(t)
    except Exception as e:  # the summary says what went wrong
        summary["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(summary))
    sys.stdout.flush()
    if summary["error"] or not summary.get("finished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
