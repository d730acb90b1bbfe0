#!/usr/bin/env python3
"""Per-packet cost of xdp_lb on a frame to a service's port on an address that is no VIP
(198.18.0.200:8080, ACK), beside the no-op, in one run with interleaved rounds (issue 19:
peers.py has no such path). Verifies: project XDP_PASS, frame untouched, verdict
pass_not_service +n (+ up to 100 of the lab's own traffic), no flow_stats event.

Uses peers.py's helpers: copy it next to peers.py (a copy of the perf directory), and run it
in perf-lab.sh after each peers.py run:
    python3 "$here/nonvip.py" --project "$prog_id" --netns pf-lb
"""
import argparse, os, sys, time, socket, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers as P

PASS_NOT_SERVICE = 2
# the lab's own traffic (health checks' replies, ARP) lands in pass_not_service too: a
# batch may count a few more than it sent
XDP_PASS = 2

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=int, required=True)
    ap.add_argument("--netns", default="pf-lb")
    ap.add_argument("--backend-netns", default="pf-b1,pf-b2,pf-b3")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1000000)
    args = ap.parse_args()
    P.NCPU = P.possible_cpus()
    t0 = P.cpu_times(); time.sleep(1); busy = P.cpu_busy(t0, P.cpu_times())
    cpu = int(min(busy, key=busy.get)[3:])
    os.sched_setaffinity(0, {cpu})
    os.makedirs(f"{P.WORK}/build", exist_ok=True)
    floor = f"{P.WORK}/build/ref_dsr-nonvip.o"
    P.sh(P.CLANG, *P.FLOOR_FLAGS, "-I/usr/include/x86_64-linux-gnu", "-c", os.path.join(P.HERE, "ref_dsr.c"), "-o", floor)
    lab = P.Lab(args.netns, [b for b in args.backend_netns.split(",") if b])
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    P.setns(f"/run/netns/{args.netns}"); lab.ifindex = socket.if_nametoindex("eth0"); P.libc.setns(home, P.CLONE_NEWNET)
    try:
        fprogs, _ = P.loadall(floor, "floor")
        noop = P.Noop(fprogs["noop_tx"])
        proj = P.Project(args.project, lab)
        P.attach_scratch([("noop", noop.fd)])
        P.setns(f"/run/netns/{args.netns}")
        v, f = proj.maps["verdict_stats"], proj.maps["flow_stats"]
        def counts():
            return (P.sum_counter(v, PASS_NOT_SERVICE), tuple(P.sum_counter(f, i) for i in range(16)))
        nv = P.tcp_frame(lab.lb_mac, lab.client_mac, P.CLIENT, "198.18.0.200", P.CPORT, P.VPORT, 0x10)
        fr = P.Frames([nv])
        runner = P.Runner(lab.ifindex)
        progs = {"noop": noop, "project": proj}
        single = {n: [] for n in progs}; rep = {n: [] for n in progs}; problems = []
        for _ in range(3):
            for n, p in progs.items():
                runner.run(p.fd, fr.addr(0), fr.len)
        for r in range(args.rounds):
            order = list(progs)[r % 2:] + list(progs)[:r % 2]
            for n in order:
                p = progs[n]
                b = counts()
                for _ in range(args.batch):
                    ret, d, out = runner.run(p.fd, fr.addr(0), fr.len)
                    single[n].append(d)
                want = P.XDP_TX if n == "noop" else XDP_PASS
                if ret != want or out != nv:
                    problems.append(f"{n}: ret {ret}, out {'same' if out == nv else 'changed'}")
                a = counts()
                if n == "project" and (not args.batch <= a[0] - b[0] <= args.batch + 100 or a[1][:4] != b[1][:4]):
                    problems.append(f"project counters: pass_not_service +{a[0]-b[0]}, flow_stats {b[1]} -> {a[1]}")
            for n in order:
                p = progs[n]
                b = counts()
                ret, d, out = runner.run(p.fd, fr.addr(0), fr.len, repeat=args.repeat)
                rep[n].append(d)
                a = counts()
                if n == "project" and (not args.repeat <= a[0] - b[0] <= args.repeat + 100 or a[1][:4] != b[1][:4]):
                    problems.append(f"project repeat counters: +{a[0]-b[0]}")
    finally:
        P.libc.setns(home, P.CLONE_NEWNET)
        import subprocess
        subprocess.run(["ip", "netns", "del", P.SCRATCH_NS], capture_output=True)
        subprocess.run(["rm", "-rf", P.PIN])
    sm = {n: statistics.median(x) for n, x in single.items()}
    sq = {n: P.iqm(x) for n, x in single.items()}
    rm = {n: statistics.median(x) for n, x in rep.items()}
    print(f"nonvip (198.18.0.200:8080 ACK), CPU {cpu}, busy {busy}; prog {proj.id} xlated {proj.xlated} jited {proj.jited} verified {proj.verified}")
    for n in progs:
        print(f"  {n:8} single median {sm[n]:.0f} IQM {sq[n]:.1f}  repeat {rm[n]:.1f}")
    print(f"  project NET: single median {sm['project']-sm['noop']:.0f}, IQM {sq['project']-sq['noop']:.1f}, repeat {rm['project']-rm['noop']:.1f}")
    print(f"  verified: {'ALL' if not problems else problems[:5]}")
    if problems:
        sys.exit(1)

if __name__ == "__main__":
    main()
