"""Seeds sessions straight into Redis (exactly as users-api stores them) and, optionally,
joins users to the line so status polls have tokens. Setup only: never measured."""
import hashlib, json, os, secrets, base64, subprocess, sys, http.client

prefix, n, sessions_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tokens = []
cmds = []
for i in range(n):
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    key = f"{prefix}session:{hashlib.sha256(token.encode()).hexdigest()}"
    value = json.dumps({"user_id": 1_000_000 + i, "username": f"bench_{i}", "role": "USER"})
    parts = ["SET", key, value, "EX", "3600"]
    cmds.append(f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts))
    tokens.append(token)
subprocess.run(["redis-cli", "--pipe"], input="".join(cmds).encode(), check=True, capture_output=True)
with open(sessions_file, "w") as f:
    f.write("\n".join(tokens) + "\n")

if len(sys.argv) > 5:
    port, tokens_file, joins = int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    with open(tokens_file, "w") as f:
        for s in tokens[:joins]:
            conn.request("POST", "/api/queue/tokens", body='{"concert_id":1}',
                         headers={"Authorization": f"Bearer {s}", "Content-Type": "application/json"})
            r = conn.getresponse()
            body = json.loads(r.read())
            f.write(f"{s} {body['token']}\n")
