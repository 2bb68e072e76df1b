#!/usr/bin/env python3
"""What one purchase costs the platform: bench/purchase-cost.sh's helper.

    purchase_cost.py run DIR LOADTEST [ARGS...]   snapshot, run the flash sale, snapshot, report
    purchase_cost.py report DIR                    the table and DIR/cost.json again from DIR/snapshots.json
    purchase_cost.py snapshot                      one snapshot as JSON on stdout (to look at it)
    purchase_cost.py merge DIR REPORT              DIR/sale.json with figures.cpu_ms_per_purchase
                                                   from DIR/cost.json, written to REPORT
    purchase_cost.py pick REPORT SALE.json...      of several sales' merged reports, the one with
                                                   the median sell-out, with figures.sales (every
                                                   sale's figures) added, written to REPORT

`run` starts `LOADTEST run flash-sale ARGS --json DIR/sale.json` (stdout to DIR/sale.txt,
stderr to DIR/loadtest.log) and takes a snapshot of every counter below at four moments:
`start` (before the load tool starts), `open` and `over` (when it prints "the sale opens" and
"the sale is over" on stderr) and `end` (after it exits). Two windows are reported:

    sale       open -> over: the fans arrive, hold, pay and see CONFIRMED, until the last fan is
               done (bought, gone or told SOLD_OUT): the per-purchase figure
    whole run  start -> end: also the setup (sign-ups, log-ins, wallets funded) and the audit

A snapshot holds:
  - CPU ticks (utime + stime, /proc/<pid>/stat, CLK_TCK) of every process in .stack/pids/*.pid,
    the gateway's nginx (master in .stack/gateway/nginx.pid and its workers), the Kafka broker
    (.stack/kafka/kafka.pid), every PostgreSQL process (the postmaster, from postmaster.pid in
    the data directory, its children, and its cutime + cstime: what its exited children used),
    and the load tool itself (reported apart, not part of the platform)
  - each PostgreSQL connection's database (from its process title) and client process (its
    client port in pg_stat_activity, matched with `ss -tnp`), so a backend's CPU is charged to
    the process it serves
  - Redis INFO cpu (used_cpu_sys + used_cpu_user) and commandstats (calls per command)
  - pg_stat_database xact_commit + xact_rollback of every database
  - the end offset of every Kafka partition (ListOffsets over the broker's own protocol; the
    local install has no GetOffsetShell)
  - the machine's busy CPU time (/proc/stat), to show what ran besides the platform
  - which other processes held connections to PostgreSQL, Redis and Kafka (a shared server's
    figures then include their work)

The snapshot's own Redis and PostgreSQL sessions stay open from the first snapshot to the last
(no connection churn), its INFO call is subtracted, and its PostgreSQL session queries the
`postgres` database (not one of the platform's).
"""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
PG = dict(host="127.0.0.1", port="5432", user="postgres")
REDIS = ("127.0.0.1", 6379)
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
KAFKA = ("127.0.0.1", KAFKA_PORT)
DATABASES = ["ticketing_users", "ticketing_concert", "ticketing_payment"]
TOPIC_PREFIX = os.environ.get("KAFKA_TOPIC_PREFIX", "")
# common/src/events.rs: ALL_TOPICS, each with its .dlq twin.
TOPICS = ["payment.completed", "payment.refunded", "reservation.confirmed",
          "reservation.rejected", "reservation.expired"]
INSTANCES = {f"{svc}{n}" for svc in ("users-api", "concert-api", "payment-api", "batch")
             for n in ("", "-2", "-3", "-4", "-5", "-6", "-7", "-8", "-9")}
PLATFORM_TOPICS = {TOPIC_PREFIX + t + s for t in TOPICS for s in ("", ".dlq")}
CLK_TCK = int(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True,
                             check=True).stdout)
OPENS = "the sale opens"
IDLE_SECONDS = float(os.environ.get("IDLE_SECONDS", "10"))
SETTLE_SECONDS = float(os.environ.get("SETTLE_SECONDS", "11"))
OVER = "the sale is over"


# --- /proc ---------------------------------------------------------------------------------

def stat(pid):
    """(comm, ppid, utime+stime, cutime+cstime, starttime) of a live process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()
    if f[0] == "Z":
        return None
    return comm, int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19])


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def read_pid(path):
    try:
        text = Path(path).read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def machine_ticks():
    """(busy, all) ticks of every CPU together, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    total = sum(f[:8])  # guest time is already inside user
    return total - idle, total


def proc_entry(pid, component, **extra):
    s = stat(pid)
    if s is None:
        return None
    return dict(pid=pid, start=s[4], ticks=s[2], child_ticks=s[3], component=component, **extra)


# --- sockets: who holds a connection to a server ---------------------------------------------

def socket_owners(ports):
    """{(server port, client port): (comm, pid)} of every established loopback connection."""
    expr = " or ".join(f"dport = :{p}" for p in ports)
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( {expr} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    owners = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        local, peer = parts[2], parts[3]
        m = re.search(r'\(\("([^"]*)",pid=(\d+)', line)
        if not m:
            continue
        try:
            owners[(int(peer.rsplit(":", 1)[1]), int(local.rsplit(":", 1)[1]))] = (m[1], int(m[2]))
        except ValueError:
            continue
    return owners


# --- Redis (RESP over one socket) -------------------------------------------------------------

class Redis:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.buf = self.sock.makefile("rb")

    def call(self, *args):
        msg = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode()
            msg += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(msg)
        head = self.buf.readline()
        if head[:1] == b"-":
            raise RuntimeError(head.decode().strip())
        if head[:1] != b"$":
            raise RuntimeError(f"unexpected Redis answer {head!r}")
        n = int(head[1:])
        data = self.buf.read(n + 2)
        return data[:-2].decode()

    def info(self):
        """(cpu seconds, {command: calls}) from one INFO call."""
        text = self.call("INFO", "cpu", "commandstats")
        values, calls = {}, {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(re.search(r"calls=(\d+)", rest)[1])
            elif ":" in line:
                k, v = line.split(":", 1)
                values[k] = v
        cpu = float(values["used_cpu_sys"]) + float(values["used_cpu_user"])
        return cpu, calls


# --- PostgreSQL (one psql session kept open) -------------------------------------------------

class Psql:
    def __init__(self):
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-h", PG["host"], "-p", PG["port"],
             "-U", PG["user"], "-d", "postgres", "-v", "ON_ERROR_STOP=0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def rows(self, sql):
        self.p.stdin.write(sql.rstrip(";") + ";\n\\echo __end__\n")
        self.p.stdin.flush()
        out = []
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == "__end__":
                return out
            if line:
                out.append(line.split("\t"))
        raise RuntimeError("psql ended")

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


# --- Kafka: end offsets over the wire protocol (Metadata v4, ListOffsets v1) -----------------

class _Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, fmt):
        v = struct.unpack_from(">" + fmt, self.d, self.i)
        self.i += struct.calcsize(">" + fmt)
        return v[0]

    def string(self):
        n = self.take("h")
        if n < 0:
            return None
        s = self.d[self.i:self.i + n].decode()
        self.i += n
        return s

    def array(self, item):
        return [item() for _ in range(max(self.take("i"), 0))]


class Kafka:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.corr = 0

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("Kafka closed the connection")
            data += chunk
        return data

    def call(self, api_key, version, body):
        self.corr += 1
        client = b"purchase-cost"
        msg = struct.pack(">hhih", api_key, version, self.corr, len(client)) + client + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        data = self._read(struct.unpack(">i", self._read(4))[0])
        r = _Reader(data)
        if r.take("i") != self.corr:
            raise RuntimeError("Kafka answered another request")
        return r

    def end_offsets(self):
        """{"topic/partition": end offset} of every partition on the broker."""
        r = self.call(3, 4, struct.pack(">ib", -1, 0))  # Metadata v4: every topic
        r.take("i")  # throttle
        r.array(lambda: (r.take("i"), r.string(), r.take("i"), r.string()))  # brokers
        r.string()  # cluster id
        r.take("i")  # controller
        topics = {}

        def partition():
            r.take("h")
            p = r.take("i")
            r.take("i")
            r.array(lambda: r.take("i"))
            r.array(lambda: r.take("i"))
            return p

        def topic():
            err, name = r.take("h"), r.string()
            r.take("b")
            parts = r.array(partition)
            if err == 0:
                topics[name] = parts

        r.array(topic)
        body = struct.pack(">ii", -1, len(topics))
        for name, parts in topics.items():
            raw = name.encode()
            body += struct.pack(">h", len(raw)) + raw + struct.pack(">i", len(parts))
            for p in parts:
                body += struct.pack(">iq", p, -1)  # -1: the latest offset
        r = self.call(2, 1, body)  # ListOffsets v1
        offsets = {}

        def part(name):
            p, err = r.take("i"), r.take("h")
            r.take("q")
            off = r.take("q")
            if err == 0:
                offsets[f"{name}/{p}"] = off

        def tpc():
            name = r.string()
            r.array(lambda: part(name))

        r.array(tpc)
        return offsets


# --- one snapshot --------------------------------------------------------------------------

class Snapshotter:
    def __init__(self):
        self.psql = Psql()
        self.redis = Redis(REDIS)
        try:
            self.kafka = Kafka(KAFKA)
        except OSError as e:
            print(f"[purchase-cost] WARNING: Kafka at {KAFKA}: {e}", file=sys.stderr)
            self.kafka = None
        self.datadir = self.psql.rows("SHOW data_directory")[0][0]

    def close(self):
        self.psql.close()

    def take(self, label, loadtest_pid=None):
        t0 = time.time()
        busy, total = machine_ticks()
        procs, instances = [], {}
        stack_pids = set()
        for f in sorted((STATE / "pids").glob("*.pid")):
            pid = read_pid(f)
            if pid is None:
                continue
            e = proc_entry(pid, f.stem)
            if e:
                procs.append(e)
                instances[pid] = f.stem
                stack_pids.add(pid)
        every = {}
        for pid in all_pids():
            s = stat(pid)
            if s:
                every[pid] = s
        # nginx: its master and the workers it forks.
        master = read_pid(STATE / "gateway" / "nginx.pid")
        if master and master in every:
            procs.append(proc_entry(master, "gateway (nginx)", role="master"))
            stack_pids.add(master)
            for pid, s in every.items():
                if s[1] == master:
                    procs.append(proc_entry(pid, "gateway (nginx)", role="worker", parent=master))
        kafka = read_pid(STATE / "kafka" / "kafka.pid")
        if kafka and "kafka.Kafka" in cmdline(kafka):
            procs.append(proc_entry(kafka, "kafka broker"))
            stack_pids.add(kafka)
        if loadtest_pid:
            e = proc_entry(loadtest_pid, "loadtest")
            if e:
                procs.append(e)
        # PostgreSQL: the postmaster, its background processes, one backend per connection.
        owners = socket_owners([5432, REDIS[1], KAFKA_PORT])
        activity = {int(r[0]): (r[1], int(r[2]) if r[2] else None)
                    for r in self.psql.rows(
                        "SELECT pid, coalesce(datname, ''), coalesce(client_port, 0) "
                        "FROM pg_stat_activity")}
        postmaster = read_pid(Path(self.datadir) / "postmaster.pid")
        me = self.psql.p.pid
        if postmaster and postmaster in every:
            procs.append(proc_entry(postmaster, "postgres", role="postmaster"))
            for pid, s in every.items():
                if s[1] != postmaster:
                    continue
                title = cmdline(pid)
                db, port = activity.get(pid, ("", None))
                if not db:
                    # postgres: 15/main: postgres ticketing_users 127.0.0.1(4242) idle
                    m = re.match(r"postgres: [^:]*: \S+ (\S+) \S+\((\d+)\)", title)
                    if m:
                        db, port = m[1], int(m[2])
                if not db:
                    procs.append(proc_entry(pid, "postgres", role="background",
                                            parent=postmaster, title=title))
                    continue
                comm, cpid = owners.get((5432, port), ("?", None))
                client = instances.get(cpid) or ("loadtest" if cpid and cpid == loadtest_pid
                                                 else "purchase-cost" if cpid == me else comm)
                procs.append(proc_entry(pid, "postgres", role="backend", parent=postmaster,
                                        database=db, client=client, client_pid=cpid))
        procs = [p for p in procs if p]
        foreign = {}
        for (server, _), (comm, cpid) in owners.items():
            if cpid in stack_pids or cpid == loadtest_pid or cpid == me or cpid == os.getpid():
                continue
            if server == 5432:
                continue  # charged per backend below
            foreign.setdefault(str(server), {})[str(cpid)] = comm
        redis_cpu, redis_calls = self.redis.info()
        xacts = {r[0]: int(r[1]) + int(r[2]) for r in self.psql.rows(
            "SELECT datname, xact_commit, xact_rollback FROM pg_stat_database WHERE datname IS NOT NULL")}
        offsets = {}
        if self.kafka:
            try:
                offsets = self.kafka.end_offsets()
            except (OSError, RuntimeError, struct.error) as e:
                print(f"[purchase-cost] WARNING: Kafka end offsets: {e}", file=sys.stderr)
        return dict(label=label, unix=t0, took_seconds=time.time() - t0, clk_tck=CLK_TCK,
                    machine_busy_ticks=busy, machine_ticks=total, procs=procs,
                    redis_cpu_seconds=redis_cpu, redis_calls=redis_calls, pg_xacts=xacts,
                    kafka_end_offsets=offsets, foreign_clients=foreign)


# --- the differences -----------------------------------------------------------------------

def cpu_rows(a, b, rows, notes):
    """Adds to rows ({component: [platform?, seconds]}) the CPU used between two snapshots."""
    tick = 1.0 / a["clk_tck"]
    before = {(p["pid"], p["start"]): p for p in a["procs"]}
    after = {(p["pid"], p["start"]): p for p in b["procs"]}

    def add(name, ticks, platform=True):
        cur = rows.setdefault(name, [platform, 0.0])
        cur[1] += ticks * tick

    def used(key, p):
        return p["ticks"] - before[key]["ticks"] if key in before else p["ticks"]

    for key, p in after.items():
        if p["component"] == "postgres" and p.get("role") == "backend":
            client = p["client"]
            if client == "purchase-cost":
                continue
            if client == "loadtest":
                add("postgres, for loadtest's own queries", used(key, p), False)
            elif p["database"] not in DATABASES:
                add("postgres, for other databases", used(key, p), False)
            elif client in INSTANCES:
                add(f"postgres, for {client}", used(key, p))
            elif client == "?":
                add("postgres, for an unknown client", used(key, p))
            else:
                add("postgres, for other clients", used(key, p), False)
        elif p["component"] == "postgres":
            add("postgres, background + postmaster", used(key, p))
        elif p["component"] == "loadtest":
            add("loadtest", used(key, p), False)
        else:
            add(p["component"], used(key, p))
        if key not in before and p["component"] not in ("loadtest", "postgres", "gateway (nginx)"):
            notes.append(f"{p['component']} (pid {p['pid']}) started inside the window")
    # What exited children used reaches their parent's cutime + cstime when it reaps them: the
    # part of it inside the window is that minus what they had used when it opened.
    for key, p in after.items():
        if p.get("role") not in ("postmaster", "master") or key not in before:
            continue
        gone = sum(c["ticks"] for k, c in before.items()
                   if c.get("parent") == p["pid"] and k not in after)
        reaped = p["child_ticks"] - before[key]["child_ticks"] - gone
        add("postgres, exited backends (any database)" if p["component"] == "postgres"
            else p["component"], reaped)
    for key, p in before.items():
        if key not in after and p["component"] not in ("loadtest", "postgres", "gateway (nginx)"):
            notes.append(f"{p['component']} (pid {p['pid']}) exited inside the window: "
                         "its CPU after the snapshot before is lost")
    add("redis", (b["redis_cpu_seconds"] - a["redis_cpu_seconds"]) / tick)


PLATFORM_ORDER = ["users-api", "concert-api", "payment-api", "batch"]


def order(name):
    base = re.sub(r"-\d+$", "", name)
    if base in PLATFORM_ORDER:
        return (0, PLATFORM_ORDER.index(base), name)
    if name.startswith("gateway"):
        return (1, 0, name)
    if name.startswith("postgres, for ") and "other" not in name and "loadtest" not in name:
        return (2, 0, name)
    if name.startswith("postgres"):
        return (3, 0, name)
    return (4, 0, name)


def window(chain, purchases):
    """The figures between the first and the last of consecutive snapshots. CPU is summed
    over each pair (a connection seen in between is charged to its client up to then)."""
    a, b = chain[0], chain[-1]
    rows, notes = {}, []
    for x, y in zip(chain, chain[1:]):
        cpu_rows(x, y, rows, notes)
    if "loadtest_cpu_seconds" in b and a["label"] in ("start", "idle"):
        # The load tool's own CPU over the whole run: its rusage when it was reaped.
        rows["loadtest"] = [False, b["loadtest_cpu_seconds"]]
    seconds = b["unix"] - a["unix"]
    tick = 1.0 / a["clk_tck"]
    cpu = [dict(component=k, platform=v[0], cpu_seconds=round(v[1], 3),
                cpu_ms_per_purchase=round(v[1] * 1000 / purchases, 3) if purchases else None)
           for k, v in sorted(rows.items(), key=lambda kv: (not kv[1][0], order(kv[0])))]
    platform = sum(r["cpu_seconds"] for r in cpu if r["platform"])
    machine = (b["machine_busy_ticks"] - a["machine_busy_ticks"]) * tick
    loadtest = sum(r["cpu_seconds"] for r in cpu if r["component"] == "loadtest")
    counted = sum(r["cpu_seconds"] for r in cpu)
    per = (lambda n: round(n / purchases, 3)) if purchases else (lambda n: None)
    xacts = {}
    for db in DATABASES:
        n = b["pg_xacts"].get(db, 0) - a["pg_xacts"].get(db, 0)
        xacts[db] = dict(transactions=n, per_purchase=per(n))
    others = sum(v - a["pg_xacts"].get(k, 0) for k, v in b["pg_xacts"].items()
                 if k not in DATABASES and k != "postgres")
    calls = {k: v - a["redis_calls"].get(k, 0) for k, v in b["redis_calls"].items()}
    calls["info"] = calls.get("info", 0) - (len(chain) - 1)  # the snapshots' own INFO calls
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}
    redis_total = sum(calls.values())
    topics, consumer_offsets, other_topics = {}, 0, 0
    for tp, end in b["kafka_end_offsets"].items():
        n = end - a["kafka_end_offsets"].get(tp, 0)
        topic = tp.rsplit("/", 1)[0]
        if topic in PLATFORM_TOPICS:
            topics[topic] = topics.get(topic, 0) + n
        elif topic == "__consumer_offsets":
            consumer_offsets += n
        else:
            other_topics += n
    kafka_total = sum(topics.values())
    foreign = {}
    for snap in (a, b):
        for server, clients in snap["foreign_clients"].items():
            foreign.setdefault(server, {}).update(clients)
    return dict(
        from_snapshot=a["label"], to_snapshot=b["label"], seconds=round(seconds, 2),
        purchases=purchases, cpu=cpu,
        platform_cpu_seconds=round(platform, 3),
        platform_cpu_ms_per_purchase=per(platform * 1000),
        machine_busy_cpu_seconds=round(machine, 3),
        not_attributed_cpu_seconds=round(machine - counted, 3),
        loadtest_cpu_seconds=round(loadtest, 3),
        # The load tool does the same work in every run of the same arguments, so its CPU
        # tracks the machine's speed: runs a few minutes apart on this shared machine differed
        # by 20 % in both, and builds are compared by this ratio.
        platform_per_loadtest_cpu=round(platform / loadtest, 2) if loadtest else None,
        pg_transactions=xacts,
        pg_transactions_total=sum(x["transactions"] for x in xacts.values()),
        pg_transactions_per_purchase=per(sum(x["transactions"] for x in xacts.values())),
        pg_transactions_other_databases=others,
        redis_commands=redis_total, redis_commands_per_purchase=per(redis_total),
        redis_calls_by_command=calls,
        kafka_messages=kafka_total, kafka_messages_per_purchase=per(kafka_total),
        kafka_messages_by_topic={k: v for k, v in sorted(topics.items()) if v},
        kafka_consumer_offset_commits_all_groups=consumer_offsets,
        kafka_messages_other_topics=other_topics,
        other_clients_connected=foreign, notes=notes)


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def print_table(cost):
    w = cost["windows"]
    s, r = w["sale"], w["whole_run"]
    print(f"flash sale: {cost['purchases']} purchases (seats bought, CONFIRMED seen) of "
          f"{cost['seats']} seats; audit {'passed' if cost['audit_passed'] else 'FAILED'}; "
          f"stack replicas {cost['replicas']}")
    print(f"windows: sale {s['seconds']:.1f} s (the sale opens -> is over), whole run "
          f"{r['seconds']:.1f} s (with setup and audit); per purchase = over {cost['purchases']}")
    print()
    print(f"{'CPU':<46} {'sale s':>8} {'ms/purch':>9}   {'whole s':>8} {'ms/purch':>9}")
    whole = {c["component"]: c for c in r["cpu"]}
    names = [c["component"] for c in s["cpu"]] + [c["component"] for c in r["cpu"]
                                                   if c["component"] not in {x["component"] for x in s["cpu"]}]
    sale = {c["component"]: c for c in s["cpu"]}
    shown_total = False
    for name in names:
        a, b = sale.get(name), whole.get(name)
        platform = (a or b)["platform"]
        if not platform and not shown_total:
            print(f"{'= platform':<46} {fmt(s['platform_cpu_seconds'], 2):>8} "
                  f"{fmt(s['platform_cpu_ms_per_purchase'], 2):>9}   "
                  f"{fmt(r['platform_cpu_seconds'], 2):>8} {fmt(r['platform_cpu_ms_per_purchase'], 2):>9}")
            print("  not the platform:")
            shown_total = True
        print(f"{('  ' if not platform else '') + name:<46} "
              f"{fmt(a and a['cpu_seconds'], 2):>8} {fmt(a and a['cpu_ms_per_purchase'], 2):>9}   "
              f"{fmt(b and b['cpu_seconds'], 2):>8} {fmt(b and b['cpu_ms_per_purchase'], 2):>9}")
    if not shown_total:
        print(f"{'= platform':<46} {fmt(s['platform_cpu_seconds'], 2):>8} "
              f"{fmt(s['platform_cpu_ms_per_purchase'], 2):>9}   "
              f"{fmt(r['platform_cpu_seconds'], 2):>8} {fmt(r['platform_cpu_ms_per_purchase'], 2):>9}")
    print(f"{'  machine, every CPU busy (/proc/stat)':<46} {fmt(s['machine_busy_cpu_seconds'], 2):>8} "
          f"{'':>9}   {fmt(r['machine_busy_cpu_seconds'], 2):>8}")
    print(f"{'  of it not in any row above':<46} {fmt(s['not_attributed_cpu_seconds'], 2):>8} "
          f"{'':>9}   {fmt(r['not_attributed_cpu_seconds'], 2):>8}")
    print(f"{'platform / loadtest CPU (machine-speed control)':<46} "
          f"{fmt(s.get('platform_per_loadtest_cpu'), 2):>8} {'':>9}   "
          f"{fmt(r.get('platform_per_loadtest_cpu'), 2):>8}")
    print()
    print(f"{'work':<46} {'sale':>8} {'/purch':>9}   {'whole':>8} {'/purch':>9}")

    def line(label, a, pa, b, pb):
        print(f"{label:<46} {a:>8,} {fmt(pa, 2):>9}   {b:>8,} {fmt(pb, 2):>9}")

    for db in DATABASES:
        line(f"PG transactions, {db}", s["pg_transactions"][db]["transactions"],
             s["pg_transactions"][db]["per_purchase"], r["pg_transactions"][db]["transactions"],
             r["pg_transactions"][db]["per_purchase"])
    line("PG transactions, the three together", s["pg_transactions_total"],
         s["pg_transactions_per_purchase"], r["pg_transactions_total"], r["pg_transactions_per_purchase"])
    line("Redis commands", s["redis_commands"], s["redis_commands_per_purchase"],
         r["redis_commands"], r["redis_commands_per_purchase"])
    line("Kafka messages (the platform's topics)", s["kafka_messages"],
         s["kafka_messages_per_purchase"], r["kafka_messages"], r["kafka_messages_per_purchase"])
    for topic in sorted(set(s["kafka_messages_by_topic"]) | set(r["kafka_messages_by_topic"])):
        a, b = s["kafka_messages_by_topic"].get(topic, 0), r["kafka_messages_by_topic"].get(topic, 0)
        n = cost["purchases"]
        line(f"  {topic}", a, a / n if n else None, b, b / n if n else None)
    print()
    top = list(s["redis_calls_by_command"].items())[:8]
    if top:
        print("Redis commands in the sale, most called: " + ", ".join(f"{k} {v:,}" for k, v in top))
    print(f"Kafka offset commits (__consumer_offsets, every group on the broker): sale "
          f"{s['kafka_consumer_offset_commits_all_groups']:,}, whole run "
          f"{r['kafka_consumer_offset_commits_all_groups']:,}")
    idle = w.get("idle")
    if idle and idle["seconds"] > 0:
        sec = idle["seconds"]
        rate = idle["platform_cpu_seconds"] / sec
        print(f"idle stack ({sec:.1f} s before the run), per second: platform CPU "
              f"{rate * 1000:,.0f} ms, PG transactions {idle['pg_transactions_total'] / sec:,.1f}, "
              f"Redis commands {idle['redis_commands'] / sec:,.1f}, Kafka messages "
              f"{idle['kafka_messages'] / sec:,.1f}")
        if cost["purchases"]:
            print(f"  at that rate the sale's {s['seconds']:.1f} s hold {rate * s['seconds']:,.2f} CPU s "
                  f"({rate * s['seconds'] * 1000 / cost['purchases']:,.2f} ms per purchase) of "
                  "background work that would have run without the sale")
    warnings = []
    for label, wdw in (("sale", s), ("whole run", r)):
        if wdw["pg_transactions_other_databases"]:
            warnings.append(f"{label}: {wdw['pg_transactions_other_databases']:,} transactions in "
                            "other databases of the same PostgreSQL (its background and exited-"
                            "connection rows include their share)")
        if wdw["kafka_messages_other_topics"]:
            warnings.append(f"{label}: {wdw['kafka_messages_other_topics']:,} messages to other "
                            "topics of the same broker (its CPU includes them)")
        for server, clients in wdw["other_clients_connected"].items():
            what = {"6379": "Redis", str(KAFKA_PORT): "Kafka"}.get(server, server)
            warnings.append(f"{label}: other clients of {what} connected: "
                            + ", ".join(f"{c} (pid {p})" for p, c in sorted(clients.items())))
        warnings.extend(f"{label}: {n}" for n in wdw["notes"])
    for wline in dict.fromkeys(warnings):
        print(f"WARNING: {wline}")


def report(out):
    snaps = json.loads((out / "snapshots.json").read_text())
    by = {s["label"]: s for s in snaps}
    sale = json.loads((out / "sale.json").read_text()) if (out / "sale.json").is_file() else {}
    numbers = sale.get("sale") or {}
    purchases = numbers.get("bought")
    if purchases is None:
        purchases = int(sale.get("facts", {}).get("seats bought (CONFIRMED seen by the buyer)", 0))
    seats = numbers.get("seats") or int(sale.get("facts", {}).get("seats", 0))
    cost = dict(
        started_at=sale.get("started_at"), purchases=purchases, seats=seats,
        audit_passed=bool(sale.get("audit")) and all(c["ok"] for c in sale["audit"]),
        replicas=max(1, sum(1 for p in snaps[0]["procs"] if p["component"].startswith("users-api"))),
        bin_dir=os.environ.get("STACK_BIN_DIR") or str(REPO / "target" / "release"),
        loadtest_args=os.environ.get("FLASH_SALE_ARGS", ""),
        clk_tck=CLK_TCK, windows={})
    chain = [by[k] for k in ("start", "open", "over", "end") if k in by]
    if "open" in by and "over" in by:
        cost["windows"]["sale"] = window([by["open"], by["over"]], purchases)
    cost["windows"]["whole_run"] = window(chain, purchases)
    if "idle" in by:
        cost["windows"]["idle"] = window([by["idle"], by["start"]], None)
    if "sale" not in cost["windows"]:
        cost["windows"]["sale"] = cost["windows"]["whole_run"]
        print("WARNING: the load tool never said the sale opened and ended: the sale window is the whole run")
    (out / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")
    print_table(cost)
    return cost


def run(out, loadtest, args):
    out.mkdir(parents=True, exist_ok=True)
    snap = Snapshotter()
    # The idle stack first: what its background work (batch's jobs, the relays' polls, the
    # consumers, the broker) costs per second with no load.
    snaps = [snap.take("idle")]
    print(f"[purchase-cost] the idle stack for {IDLE_SECONDS:g} s", flush=True)
    time.sleep(IDLE_SECONDS)
    snaps.append(snap.take("start"))
    cmd = [loadtest, "run", "flash-sale", *args, "--json", str(out / "sale.json")]
    print("[purchase-cost] " + " ".join(cmd), flush=True)
    with open(out / "sale.txt", "w") as stdout, open(out / "loadtest.log", "w") as log:
        p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, bufsize=1)
        for line in p.stderr:
            # The snapshot first: the marker is printed as the moment happens.
            if OPENS in line and not any(s["label"] == "open" for s in snaps):
                snaps.append(snap.take("open", p.pid))
                print("[purchase-cost] the sale opens", flush=True)
            elif OVER in line and not any(s["label"] == "over" for s in snaps):
                snaps.append(snap.take("over", p.pid))
                print("[purchase-cost] the sale is over; the load tool audits it", flush=True)
            log.write(line)
            log.flush()
        # Reaped here, with its rusage: the load tool's CPU over the whole run.
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
    # Each PostgreSQL connection flushes its counters to pg_stat_database at most once a
    # second, and one that goes idle right after a flush does so PGSTAT_IDLE_INTERVAL (10 s)
    # later: the last snapshot waits that out.
    time.sleep(SETTLE_SECONDS)
    end = snap.take("end")
    end["loadtest_cpu_seconds"] = usage.ru_utime + usage.ru_stime
    snaps.append(end)
    snap.close()
    (out / "snapshots.json").write_text(json.dumps(snaps) + "\n")
    if rc != 0:
        print(f"[purchase-cost] loadtest exited with {rc} (its report: {out / 'sale.txt'}, "
              f"log: {out / 'loadtest.log'})", file=sys.stderr)
    if not (out / "sale.json").is_file():
        print("[purchase-cost] no sale.json: nothing to divide by", file=sys.stderr)
        return 1
    print()
    report(out)
    return rc


def write_with_figure(target, report, name, value):
    """Writes loadtest's `report` to `target` (whole, through a temporary file) with
    `figures.<name>` set to `value`."""
    figures = report.get("figures") or {}
    figures[name] = value
    report["figures"] = figures
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(target)


def merge(out, target):
    """Writes the sale's report (out/sale.json) to `target` with `figures.cpu_ms_per_purchase`
    set from out/cost.json: the sale window's platform rows, {total, per_process: {name: ms}}
    (loadtest's Figures; docs/BENCHMARKS.md renders it). Left null when the sale window is not
    "the sale opens" -> "the sale is over" or nothing was bought. bench/run.sh runs it after
    `run`."""
    sale = json.loads((out / "sale.json").read_text())
    cost = json.loads((out / "cost.json").read_text())
    window = cost["windows"]["sale"]
    cpu = None
    if (window["from_snapshot"], window["to_snapshot"]) != ("open", "over"):
        print("[purchase-cost] WARNING: no sale window (the load tool never said the sale "
              "opened and ended): CPU per purchase left out of the report", file=sys.stderr)
    elif window["platform_cpu_ms_per_purchase"] is None:
        print("[purchase-cost] WARNING: nothing bought: no CPU per purchase", file=sys.stderr)
    else:
        cpu = dict(total=window["platform_cpu_ms_per_purchase"],
                   per_process={r["component"]: r["cpu_ms_per_purchase"]
                                for r in window["cpu"] if r["platform"]})
    write_with_figure(target, sale, "cpu_ms_per_purchase", cpu)
    if cpu:
        print(f"[purchase-cost] CPU per purchase {cpu['total']:.2f} ms written into {target}")
    return 0


def pick(target, paths):
    """Writes to `target` the report of the sale with the median sell-out time among `paths`
    (merged reports of sales run one after another; a sale that did not sell out counts as the
    slowest), with `figures.sales`: each sale's headline figures, in the order they ran, the
    one written marked `shown` (loadtest's Figures; docs/BENCHMARKS.md renders them). One sale
    varies from the next by more than most changes we measure (its CPU per purchase by up to a
    quarter on this machine), so bench/run.sh runs several and shows the middle one and the
    spread."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    if not reports:
        print("[purchase-cost] pick: no report", file=sys.stderr)
        return 2

    def sell_out(i):
        s = (reports[i].get("figures") or {}).get("sell_out_seconds")
        return float("inf") if s is None else s

    ranked = sorted(range(len(reports)), key=sell_out)
    shown = ranked[(len(ranked) - 1) // 2]
    sales = []
    for i, r in enumerate(reports):
        f = r.get("figures") or {}
        cpu = f.get("cpu_ms_per_purchase") or {}
        sales.append(dict(sell_out_seconds=f.get("sell_out_seconds"),
                          cpu_ms_per_purchase=cpu.get("total"),
                          worst_endpoint_p99_ms=f.get("worst_endpoint_p99_ms"),
                          payment_to_confirmed_p99_ms=f.get("payment_to_confirmed_p99_ms"),
                          shown=i == shown))
    write_with_figure(target, reports[shown], "sales", sales)
    print(f"[purchase-cost] {len(reports)} sales; the median sell-out (sale {shown + 1}, "
          f"{paths[shown]}) written to {target}")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "run":
        return run(Path(argv[1]), argv[2], argv[3:])
    if len(argv) == 2 and argv[0] == "report":
        report(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "merge":
        return merge(Path(argv[1]), Path(argv[2]))
    if len(argv) >= 3 and argv[0] == "pick":
        return pick(Path(argv[1]), argv[2:])
    if argv == ["snapshot"]:
        s = Snapshotter()
        print(json.dumps(s.take("now"), indent=1))
        s.close()
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
