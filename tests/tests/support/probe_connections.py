# Holds COUNT keep-alive HTTP connections to VIP:PORT for SECONDS, asking "GET /" on each
# about every second (the lab's nginx answers its own name, and keeps a connection 5 s).
# Prints "open" once all are open, then at the end one JSON line per connection:
#   {"port": local port, "backends": names that answered, in order, repeats merged,
#    "requests": answers, "error": null or what broke it}
#
#   python3 probe_connections.py VIP PORT COUNT SECONDS [SOURCE_PORTS]
#
# SOURCE_PORTS (comma-separated, COUNT of them) binds each connection's local port.
import json
import socket
import sys
import time

vip, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])


def answer(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed mid-answer")
        body += chunk
    return body[:length].decode(errors="replace").strip()


sources = [int(p) for p in sys.argv[5].split(",")] if len(sys.argv) > 5 else [0] * count
if len(sources) != count:
    sys.exit(f"{len(sources)} source ports for {count} connections")
conns = []
for source in sources:
    s = socket.create_connection((vip, port), timeout=3, source_address=("", source))
    conns.append({"s": s, "port": s.getsockname()[1], "backends": [], "requests": 0, "error": None})
print("open", flush=True)
end = time.time() + seconds
while time.time() < end:
    for c in conns:
        if c["error"] is not None:
            continue
        try:
            c["s"].sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
            name = answer(c["s"])
            if not c["backends"] or c["backends"][-1] != name:
                c["backends"].append(name)
            c["requests"] += 1
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            c["error"] = f"{type(e).__name__}: {e}"
    time.sleep(1.0)
for c in conns:
    print(json.dumps({k: c[k] for k in ("port", "backends", "requests", "error")}), flush=True)
