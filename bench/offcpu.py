#!/usr/bin/env python3
# Off-CPU breakdown of one pull recorded with
#   perf record -o DATA -e sched:sched_switch -g -a -- systemd-pull tar ...
# Usage: bench/offcpu.py DATA [BIN_SECONDS]
# For the process of ours (systemd-import / systemd-pull, threads import-*) with the most
# CPU: each thread's time on CPU and its time switched out, by where it blocked (the
# switched-out stack: our queues' futexes told apart by the Rust frame, dirty-page
# throttling, jbd2, writeback, I/O, preemption); how many of its threads ran at once
# during the download job's span; with BIN_SECONDS, a timeline of the job's worker and
# the unpackers in bins of that length. Read it with the same binary as recorded.
import subprocess, sys, re, collections
data = sys.argv[1]
out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,time,event,trace,ip,sym"],
                     capture_output=True, text=True).stdout
hdr = re.compile(r'^\s*(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+sched:sched_switch:\s+(.*)$')
tr_re = re.compile(r'prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)')
events = []; cur = None; pid_of = {}
for line in out.splitlines():
    m = hdr.match(line)
    if m:
        cur = {"t": float(m.group(4)), "trace": m.group(5), "stack": []}
        pid_of[int(m.group(3))] = int(m.group(2))
        events.append(cur)
    elif line.strip() and cur is not None:
        parts = line.split(None, 1)
        if len(parts) == 2:
            cur["stack"].append(("K " if parts[0].startswith("ffffffff") else "U ") + parts[1].strip())
PREFIX = ("systemd-import", "systemd-pull", "import-")
CAT = [("balance_dirty_pages", "dirty throttle (balance_dirty_pages)"),
       ("start_this_handle", "jbd2 journal (start_this_handle)"), ("jbd2_", "jbd2 other"),
       ("folio_wait_writeback", "wait writeback"), ("folio_wait_bit", "wait page lock/IO"),
       ("ep_poll", "epoll_wait (loop)"), ("rwsem_down", "rwsem (inode/dir lock)"),
       ("mutex_lock", "mutex (kernel)"), ("io_schedule", "I/O wait"),
       ("exit_to_user_mode", "preempted"), ("irqentry_exit", "preempted"),
       ("preempt_schedule", "preempted (kernel)"), ("__cond_resched", "preempted (cond_resched)")]
def classify(stack):
    user = [f[2:] for f in stack if f.startswith('U ') and f[2:] not in ('syscall', '[unknown]')]
    for fr in stack:
        if 'futex' in fr:
            u = user[0] if user else "?"
            if 'send' in u: return "futex: queue full (send)"
            if 'recv' in u: return "futex: queue empty (recv)"
            if 'ChannelReader' in u: return "futex: waiting for the download (ChannelReader)"
            return "futex @ " + u[:50]
        for key, name in CAT:
            if key in fr: return name
    return "other:" + (stack[0][2:] if stack else "?")
res = collections.defaultdict(lambda: collections.defaultdict(float))
cnt = collections.defaultdict(lambda: collections.defaultdict(int))
oncpu = collections.defaultdict(float); inat = {}; pend = {}; names = {}; first = {}; last = {}
runs = []  # (t, tid, +1/-1)
for e in events:
    m = tr_re.search(e["trace"])
    if not m: continue
    pcomm, ppid, pstate, ncomm, npid = m.group(1), int(m.group(2)), m.group(3), m.group(4), int(m.group(5))
    t = e["t"]
    if pcomm.startswith(PREFIX):
        names[ppid] = pcomm
        st = [fr for fr in e["stack"] if not fr[2:].startswith(("__schedule", "schedule", "__traceiter", "trace_"))]
        pend[ppid] = (t, classify(st) + ("" if pstate in ("S", "D") else " [" + pstate + "]"))
        first.setdefault(ppid, t); last[ppid] = t
        if ppid in inat:
            oncpu[ppid] += t - inat.pop(ppid); runs.append((t, ppid, -1))
    if npid in pend:
        t0, c = pend.pop(npid); res[npid][c] += t - t0; cnt[npid][c] += 1
    if ncomm.startswith(PREFIX):
        names.setdefault(npid, ncomm); first.setdefault(npid, t); last[npid] = t
        inat[npid] = t; runs.append((t, npid, +1))
bypid = collections.defaultdict(float)
for tid, v in oncpu.items(): bypid[pid_of.get(tid, tid)] += v
main = max(bypid, key=bypid.get)
tids = [t for t in oncpu if pid_of.get(t, t) == main and (oncpu[t] > 0.01 or sum(res[t].values()) > 0.05)]
print(f"pid {main}: on-CPU {bypid[main]:.2f} s")
for tid in sorted(tids):
    tot = sum(res[tid].values())
    print(f"{names.get(tid)} {tid}: span {last[tid]-first[tid]:.2f} s, on-CPU {oncpu[tid]:.2f} s, off-CPU {tot:.2f} s")
    for c, v in sorted(res[tid].items(), key=lambda kv: -kv[1])[:7]:
        if v >= 0.005: print(f"    {v:7.3f} s  {cnt[tid][c]:6d}x  {c}")
# concurrency of the pull's threads over the job's span
job = [t for t in tids if names.get(t) == "import-job"]
if job:
    j = max(job, key=lambda t: oncpu[t]); a, b = first[j], last[j]
    running = 0; prev = a; hist = collections.defaultdict(float)
    for t, tid, d in sorted(r for r in runs if pid_of.get(r[1], r[1]) == main):
        if t > a:
            hist[running] += min(t, b) - max(prev, a)
        prev = t; running += d
        if t > b: break
    print("job span %.2f s: our threads on CPU 0: %.2f s, 1: %.2f s, 2+: %.2f s" % (b - a, hist[0], hist[1], sum(v for k, v in hist.items() if k >= 2)))

# timeline: per bin, seconds of each state for the job and the unpackers
if len(sys.argv) > 2 and job:
    BIN = float(sys.argv[2])
    segs = collections.defaultdict(lambda: collections.defaultdict(float))
    state = {}
    def add(tid, t0, t1, what):
        kind = "job" if names.get(tid) == "import-job" else "unp"
        while t0 < t1:
            b = int((t0 - a) / BIN); end = min(t1, a + (b + 1) * BIN)
            segs[b][kind + ":" + what] += end - t0; t0 = end
    on = {}; off = {}
    for e in events:
        m = tr_re.search(e["trace"])
        if not m: continue
        pcomm, ppid, pstate, ncomm, npid = m.group(1), int(m.group(2)), m.group(3), m.group(4), int(m.group(5))
        t = e["t"]
        if ppid in tids and (ppid == j or names.get(ppid) == "import-unpack"):
            if ppid in on: add(ppid, on.pop(ppid), t, "run")
            st = [fr for fr in e["stack"] if not fr[2:].startswith(("__schedule", "schedule", "__traceiter", "trace_"))]
            c = classify(st); off[ppid] = (t, "full" if "send" in c else "empty" if "recv" in c else "pre" if pstate.startswith("R") else "other")
        if npid in tids and (npid == j or names.get(npid) == "import-unpack"):
            if npid in off: t0, w = off.pop(npid); add(npid, t0, t, w)
            on[npid] = t
    print("bin   job: run full pre other | unpackers(sum): run empty pre other")
    for b in sorted(segs):
        s = segs[b]
        print("%5.2f  %4.2f %4.2f %4.2f %4.2f | %4.2f %4.2f %4.2f %4.2f" % (b * BIN, s["job:run"], s["job:full"], s["job:pre"], s["job:other"], s["unp:run"], s["unp:empty"], s["unp:pre"], s["unp:other"]))
