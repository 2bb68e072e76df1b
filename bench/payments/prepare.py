"""Setup for the payments benchmark (never measured): fund every buyer and give each one a
held seat, through the real APIs. Reads the buyers/schedules the holds seed wrote."""
import http.client, json, sys

concert_port, payment_port, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
buyers = [l.split() for l in open(seed + ".buyers") if l.strip()]
schedules = [l.strip() for l in open(seed + ".schedules") if l.strip()]
cc = http.client.HTTPConnection("127.0.0.1", concert_port)
pc = http.client.HTTPConnection("127.0.0.1", payment_port)

def call(conn, path, body, session, queue=None):
    headers = {"Authorization": f"Bearer {session}", "Content-Type": "application/json"}
    if queue:
        headers["X-Queue-Token"] = queue
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = json.loads(r.read())
    assert r.status == 201, (path, r.status, data)
    return data

out = []
for i, (session, queue) in enumerate(buyers):
    call(pc, "/api/wallet/charges", {"amount": 10000}, session)
    res = call(cc, "/api/reservations", {"schedule_id": int(schedules[i // 1000]), "seat_nos": [i % 1000 + 1]}, session, queue)
    out.append(f"{session} {queue} {res['id']}")
open(seed + ".payable", "w").write("\n".join(out) + "\n")
