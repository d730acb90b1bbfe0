# Holds COUNT quiet TCP connections to VIP:PORT for SECONDS: each sends one byte after its
# handshake (so the balancer's entry is used once more, as any live connection's is) and
# then nothing. Prints how many were opened.
#
#   python3 hold_connections.py VIP PORT COUNT SECONDS
import socket
import sys
import time

vip, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
for _ in range(count):
    s = socket.create_connection((vip, port), timeout=5)
    s.sendall(b"\x03")
    held.append(s)
print(len(held), flush=True)
time.sleep(seconds)
