"""Setup for the holds benchmark (never measured): an admin session, a concert with
schedules created through the admin API, and buyers whose sessions and ACTIVE queue passes
are written to Redis exactly as users-api writes them."""
import base64, hashlib, http.client, json, secrets, subprocess, sys, time

prefix, port, schedules, seats, buyers, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]

def token():
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()

def resp(*parts):
    return f"*{len(parts)}\r\n" + "".join(f"${len(str(p).encode())}\r\n{p}\r\n" for p in parts)

def session(cmds, user_id, role):
    t = token()
    key = f"{prefix}session:{hashlib.sha256(t.encode()).hexdigest()}"
    cmds.append(resp("SET", key, json.dumps({"user_id": user_id, "username": f"b{user_id}", "role": role}), "EX", 3600))
    return t

cmds = []
admin = session(cmds, 1, "ADMIN")
subprocess.run(["redis-cli", "--pipe"], input="".join(cmds).encode(), check=True, capture_output=True)

conn = http.client.HTTPConnection("127.0.0.1", port)
def post(path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = json.loads(r.read())
    assert r.status == 201, (path, r.status, data)
    return data

concert = post("/api/admin/concerts", {"title": "Bench", "performer": "Load"})["id"]
now = time.time()
iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
ids = [post(f"/api/admin/concerts/{concert}/schedules",
            {"starts_at": iso(now + 86400), "booking_opens_at": iso(now - 60), "seat_count": seats, "price": 1000})["id"]
       for _ in range(schedules)]
contended = post(f"/api/admin/concerts/{concert}/schedules",
                 {"starts_at": iso(now + 86400), "booking_opens_at": iso(now - 60), "seat_count": 1, "price": 1000})["id"]

cmds = []
lines = []
until_ms = int((now + 3600) * 1000)
for i in range(buyers):
    uid = 100_000 + i
    s = session(cmds, uid, "USER")
    q = f"{concert}.{token()}"
    cmds.append(resp("SET", f"{prefix}queue:{{c{concert}}}:user:{uid}", q, "EX", 3600))
    cmds.append(resp("ZADD", f"{prefix}queue:{{c{concert}}}:active", until_ms, q))
    lines.append(f"{s} {q}")
subprocess.run(["redis-cli", "--pipe"], input="".join(cmds).encode(), check=True, capture_output=True)
with open(out + ".buyers", "w") as f:
    f.write("\n".join(lines) + "\n")
with open(out + ".schedules", "w") as f:
    f.write("\n".join(map(str, ids)) + "\n")
with open(out + ".contended", "w") as f:
    f.write(f"{contended}\n")
