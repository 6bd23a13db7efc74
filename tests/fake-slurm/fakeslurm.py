"""A fake Slurm (sbatch, squeue, scontrol, scancel) for tests of lmgeo's Slurm
executor. Python 3 standard library only. See README.md beside this file.

The output formats copy what Slurm 22.05.8 printed on a one-node test cluster
(tests/fixtures/slurm/, captured by scripts/slurm/capture-fixtures.sh).

State: $FAKE_SLURM_DIR (required)
  meta.json      the job id counter (and FAKE_SLURM_FAIL_ONCE's memory)
  jobs/N.json    job N and its tasks, rewritten atomically under `lock`
  lock           fcntl.flock lock file
  calls.jsonl    one JSON line per invocation of any command
  scripts/       job scripts and environments, copied at submission as sbatch does
  runner-N.log   errors of the background runner of job N (normally absent)

Each sbatch starts one detached runner process (new session, stdio on
/dev/null) for its job; the runner starts the tasks with bash, watches them,
applies the failure scenarios and exits when the job is over. scancel and
scontrol only change the job records; the runner does the killing.
"""

import fcntl
import json
import os
import re
import signal
import sys
import time

# subprocess, shlex, traceback and fnmatch are imported where used: every
# call of squeue pays for what is imported here.

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_TEMPLATE = os.path.join(HERE, "..", "fixtures", "slurm", "scontrol-show-config.txt")
FIRST_JOB_ID = 1000
NO_ARRAY_INDEX = 4294967294  # what %a expands to for a job that is not an array
POLL = 0.05

# State names (squeue %T) and their short codes (%t, --states=).
STATE_CODES = {
    "PENDING": "PD", "RUNNING": "R", "SUSPENDED": "S", "COMPLETING": "CG",
    "COMPLETED": "CD", "CONFIGURING": "CF", "CANCELLED": "CA", "FAILED": "F",
    "TIMEOUT": "TO", "PREEMPTED": "PR", "NODE_FAIL": "NF", "BOOT_FAIL": "BF",
    "DEADLINE": "DL", "OUT_OF_MEMORY": "OOM", "REQUEUED": "RQ",
    "REQUEUE_FED": "RF", "REQUEUE_HOLD": "RH", "RESIZING": "RS",
    "REVOKED": "RV", "SIGNALING": "SI", "SPECIAL_EXIT": "SE", "STAGE_OUT": "SO",
    "STOPPED": "ST",
}
ACTIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING",
          "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING",
          "STAGE_OUT", "STOPPED"}
# A task in one of these states will not change again (unless requeued).
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
         "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"}

# sbatch options that take no value (everything else takes one).
SBATCH_FLAGS = {
    "parsable", "hold", "requeue", "no-requeue", "wait", "test-only", "quiet",
    "verbose", "overcommit", "spread-job", "contiguous", "use-min-nodes",
    "ignore-pbs", "reboot", "help", "usage", "version", "exclusive", "no-kill",
    "oversubscribe", "get-user-env", "nice", "propagate", "wait-all-nodes",
}
SBATCH_SHORT_FLAGS = {"H": "hold", "W": "wait", "Q": "quiet", "v": "verbose",
                      "O": "overcommit", "h": "help", "V": "version", "s": "oversubscribe",
                      "k": "no-kill"}
SBATCH_SHORT = {"J": "job-name", "a": "array", "o": "output", "e": "error",
                "D": "chdir", "d": "dependency", "p": "partition", "t": "time",
                "c": "cpus-per-task", "n": "ntasks", "N": "nodes", "G": "gpus",
                "A": "account", "q": "qos", "w": "nodelist", "x": "exclude",
                "C": "constraint", "i": "input", "M": "clusters", "L": "licenses",
                "m": "distribution", "b": "begin", "F": "nodefile", "S": "core-spec"}


def is_final(t):
    """Ended for good: a final state that is not a passing PREEMPTED/COMPLETING
    on the way back to PENDING."""
    return t["state"] in FINAL and not t.get("then")


def die(prog, msg, rc=1):
    sys.stderr.write(msg if msg.endswith("\n") else msg + "\n")
    return rc


# ---------------------------------------------------------------- state

class State:
    """`with State() as st:` holds the lock. Job records live in jobs/N.json
    (loaded on first use, written back on exit when changed); meta.json has
    the id counter."""

    def __init__(self, write=True):
        self.dir = state_dir()
        self.write = write
        self.cache, self.orig = {}, {}

    def __enter__(self):
        os.makedirs(os.path.join(self.dir, "jobs"), exist_ok=True)
        self.lockf = open(os.path.join(self.dir, "lock"), "a+")
        fcntl.flock(self.lockf, fcntl.LOCK_EX)
        try:
            with open(os.path.join(self.dir, "meta.json")) as f:
                self.meta_text = f.read()
            self.data = json.loads(self.meta_text)
        except FileNotFoundError:
            self.meta_text = None
            self.data = {"next_id": FIRST_JOB_ID, "failed_once": []}
        return self

    def job(self, job_id):
        key = str(job_id)
        if key not in self.cache:
            try:
                with open(os.path.join(self.dir, "jobs", key + ".json")) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            self.orig[key] = text
            self.cache[key] = json.loads(text)
        return self.cache[key]

    def jobs(self):
        ids = sorted(int(n[:-5]) for n in os.listdir(os.path.join(self.dir, "jobs")) if n.endswith(".json"))
        ids = sorted(set(ids) | {int(k) for k in self.cache})
        return [j for j in (self.job(i) for i in ids) if j is not None]

    def add_job(self, job):
        self.cache[str(job["id"])] = job
        self.orig[str(job["id"])] = None

    @staticmethod
    def _put(path, text):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def __exit__(self, exc_type, *_):
        try:
            if self.write and exc_type is None:
                meta = json.dumps(self.data)
                if meta != self.meta_text:
                    self._put(os.path.join(self.dir, "meta.json"), meta)
                for key, job in self.cache.items():
                    text = json.dumps(job)
                    if text != self.orig.get(key):
                        self._put(os.path.join(self.dir, "jobs", key + ".json"), text)
        finally:
            fcntl.flock(self.lockf, fcntl.LOCK_UN)
            self.lockf.close()
        return False


def state_dir():
    d = os.environ.get("FAKE_SLURM_DIR")
    if not d:
        sys.stderr.write("fake-slurm: FAKE_SLURM_DIR is not set\n")
        sys.exit(2)
    os.makedirs(d, exist_ok=True)
    return d


def record_call(prog, argv):
    d = state_dir()
    line = json.dumps({"cmd": prog, "argv": argv, "cwd": os.getcwd(), "time": time.time()})
    with open(os.path.join(d, "lock"), "a+") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        with open(os.path.join(d, "calls.jsonl"), "a") as f:
            f.write(line + "\n")
        fcntl.flock(lk, fcntl.LOCK_UN)


def node_name():
    return os.environ.get("FAKE_SLURM_NODENAME") or os.uname().nodename.split(".")[0]


def max_array_size():
    return int(os.environ.get("FAKE_SLURM_MAX_ARRAY_SIZE", "1001"))


def env_float(name, default):
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


def now():
    return time.time()


def stamp(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t or now()))


# ---------------------------------------------------------------- index lists

def parse_index_list(text):
    """'0,3,5-7,*' -> (set of ints, all?) for the FAKE_SLURM_* scenario lists."""
    out, everything = set(), False
    for part in re.split(r"[,\s]+", (text or "").strip()):
        if not part:
            continue
        if part == "*":
            everything = True
        elif "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return sorted(out), everything


def parse_array(spec):
    """'0-9%2', '1,5,7', '0-10:2' -> (indices, throttle) or None if invalid."""
    throttle = 0
    if "%" in spec:
        spec, t = spec.rsplit("%", 1)
        if not t.isdigit():
            return None
        throttle = int(t)
    idx = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            return None
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        step = int(m.group(3)) if m.group(3) else 1
        if b < a or step < 1:
            return None
        idx.extend(range(a, b + 1, step))
    idx = sorted(set(idx))
    return (idx, throttle) if idx else None


def compress(indices):
    """[2,3,4,7] -> '2-4,7' (how squeue prints a group of array tasks)."""
    out, i = [], 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        out.append(str(indices[i]) if i == j else "%d-%d" % (indices[i], indices[j]))
        i = j + 1
    return ",".join(out)


# ---------------------------------------------------------------- sbatch

def parse_sbatch_args(argv):
    """-> (opts dict, script path or None, script args). Stops at the first
    non-option, as sbatch does."""
    opts, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            if not eq:
                if name in SBATCH_FLAGS:
                    val = True
                else:
                    i += 1
                    if i >= len(argv):
                        raise ValueError("option '--%s' requires an argument" % name)
                    val = argv[i]
            opts[name] = val
        elif a.startswith("-") and len(a) > 1:
            k = a[1]
            if k in SBATCH_SHORT_FLAGS:
                opts[SBATCH_SHORT_FLAGS[k]] = True
                if len(a) > 2:  # bundled flags like -HQ
                    argv = argv[:i + 1] + ["-" + a[2:]] + argv[i + 1:]
            else:
                name = SBATCH_SHORT.get(k, k)
                if len(a) > 2:
                    val = a[2:]
                else:
                    i += 1
                    if i >= len(argv):
                        raise ValueError("option requires an argument -- '%s'" % k)
                    val = argv[i]
                opts[name] = val
        else:
            break
        i += 1
    script = argv[i] if i < len(argv) else None
    return opts, script, argv[i + 1:]


def directives(text):
    """#SBATCH lines at the top of a script (until the first command)."""
    import shlex
    args = []
    for n, line in enumerate(text.splitlines()):
        s = line.strip()
        if n == 0 and s.startswith("#!"):
            continue
        if not s:
            continue
        if s.startswith("#SBATCH"):
            body = s[len("#SBATCH"):].split(" #", 1)[0]
            args.extend(shlex.split(body))
        elif s.startswith("#"):
            continue
        else:
            break
    return args


def parse_dependency(spec):
    """'afterok:1:2,afterany:3' -> [[(kind, id, task or None), ...]] (outer list
    = alternatives joined by '?', inner = all required). Raises ValueError."""
    alternatives = []
    for alt in spec.split("?"):
        group = []
        for part in alt.split(","):
            part = part.strip()
            if not part:
                continue
            if part == "singleton":
                group.append(("singleton", None, None))
                continue
            kind, _, ids = part.partition(":")
            if kind not in ("after", "afterany", "afterok", "afternotok", "aftercorr", "afterburstbuffer") or not ids:
                raise ValueError(part)
            for jid in ids.split(":"):
                jid = jid.split("+", 1)[0]  # after:ID+minutes
                m = re.fullmatch(r"(\d+)(?:_(\d+))?", jid)
                if not m:
                    raise ValueError(part)
                group.append((kind, int(m.group(1)), int(m.group(2)) if m.group(2) else None))
        if not group:
            raise ValueError(spec)
        alternatives.append(group)
    return alternatives


def build_env(opts):
    export = str(opts.get("export", "ALL"))
    base = dict(os.environ)
    if export == "ALL":
        return base
    env = {}
    items = [x for x in export.split(",") if x]
    if "ALL" in items:
        env = dict(base)
    elif "NONE" in items or items:
        # Like Slurm with --export=NONE/VAR...: only SLURM_* from the caller
        for k, v in base.items():
            if k.startswith("SLURM_"):
                env[k] = v
        env.setdefault("PATH", base.get("PATH", os.defpath))
        env.setdefault("HOME", base.get("HOME", "/"))
    for item in items:
        if item in ("ALL", "NONE"):
            continue
        k, eq, v = item.partition("=")
        if eq:
            env[k] = v
        elif k in base:
            env[k] = base[k]
    return env


def scenario_matches(name):
    pat = os.environ.get("FAKE_SLURM_SCENARIO_NAME")
    if not pat:
        return True
    import fnmatch
    return fnmatch.fnmatchcase(name, pat)


def cmd_sbatch(argv):
    try:
        opts, script, script_args = parse_sbatch_args(argv)
    except ValueError as e:
        return die("sbatch", "sbatch: error: %s" % e)
    cwd = os.getcwd()
    wrap = opts.get("wrap")
    if wrap is not None:
        if script is not None:
            script_args = [script] + script_args
        text = "#!/bin/sh\n# This script was created by sbatch --wrap.\n\n%s\n" % wrap
        script_path = None
    elif script is not None:
        try:
            with open(script) as f:
                text = f.read()
        except OSError as e:
            return die("sbatch", "sbatch: error: Unable to open file %s" % script)
        script_path = os.path.abspath(script)
    else:
        text = sys.stdin.read()
        script_path = None
        script = "sbatch"
        if not text.strip():
            return die("sbatch", "sbatch: error: Batch script is empty!")
    if not text.startswith("#!"):
        return die("sbatch", "sbatch: error: This does not look like a batch script.  "
                   "The first\nsbatch: error: line must start with #! followed by the "
                   "path to an interpreter.\nsbatch: error: For instance: #!/bin/sh")
    try:
        dopts, _, _ = parse_sbatch_args(directives(text) + ["__script__"])
    except ValueError as e:
        return die("sbatch", "sbatch: error: %s" % e)
    merged = dict(dopts)
    merged.update(opts)  # the command line wins
    opts = merged

    partitions = [p for p in os.environ.get("FAKE_SLURM_PARTITIONS", "debug,gpu").split(",") if p]
    partition = str(opts.get("partition", partitions[0] if partitions else "debug"))
    for p in partition.split(","):
        if p not in partitions:
            return die("sbatch", "sbatch: error: invalid partition specified: %s\n"
                       "sbatch: error: Batch job submission failed: Invalid partition name specified" % p)

    is_array = "array" in opts
    throttle = 0
    if is_array:
        parsed = parse_array(str(opts["array"]))
        if parsed is None or parsed[0][-1] > max_array_size() - 1:
            return die("sbatch", "sbatch: error: Batch job submission failed: Invalid job array specification")
        indices, throttle = parsed
    else:
        indices = [None]

    deps = None
    if opts.get("dependency"):
        try:
            deps = parse_dependency(str(opts["dependency"]))
        except ValueError:
            return die("sbatch", "sbatch: error: Batch job submission failed: Job dependency problem")

    name = str(opts.get("job-name") or (os.path.basename(script) if wrap is None else "wrap"))
    chdir = os.path.join(cwd, str(opts["chdir"])) if opts.get("chdir") else cwd
    default_out = "slurm-%A_%a.out" if is_array else "slurm-%j.out"
    output = str(opts.get("output", default_out))
    error = str(opts["error"]) if "error" in opts else None

    sc_on = scenario_matches(name)

    def scen(var):
        if not sc_on:
            return [], False
        return parse_index_list(os.environ.get(var, ""))

    scenarios = {k: scen("FAKE_SLURM_" + k.upper()) for k in
                 ("fail", "fail_once", "vanish", "requeue", "preempt", "preempt_cancel", "timeout")}
    d = state_dir()
    with State() as st:
        job_id = st.data["next_id"]
        n = len(indices)
        st.data["next_id"] = job_id + n
        # Like Slurm: the last task keeps the array's id, the others get the
        # ids after it (Slurm hands those out as it splits tasks off).
        task_ids = [job_id + 1 + k for k in range(n - 1)] + [job_id]
        os.makedirs(os.path.join(d, "scripts"), exist_ok=True)
        spath = os.path.join(d, "scripts", "%d.sh" % job_id)
        with open(spath, "w") as f:
            f.write(text)
        tasks = []
        for k, idx in enumerate(indices):
            key_idx = 0 if idx is None else idx
            flags = [s for s, (lst, every) in scenarios.items() if every or key_idx in lst]
            if "fail_once" in flags:
                key = "%s/%d" % (name, key_idx)
                if key in st.data.setdefault("failed_once", []):
                    flags.remove("fail_once")
                else:
                    st.data["failed_once"].append(key)
            tasks.append({
                "idx": idx, "id": task_ids[k], "state": "PENDING", "reason": "None",
                "restarts": 0, "exit": None, "start": None, "end": None,
                "started_ever": False, "eligible_at": 0, "scenarios": flags,
                "then": None, "then_at": None, "kill": None, "held": bool(opts.get("hold")),
                "log": None,
            })
        if opts.get("hold"):
            for t in tasks:
                t["reason"] = "JobHeldUser"
        job = {
            "id": job_id, "name": name, "array": is_array, "throttle": throttle,
            "argv": argv, "opts": {k: v for k, v in opts.items()}, "script": spath,
            "script_path": script_path, "args": script_args, "cwd": chdir,
            "submit_dir": cwd, "output": output, "error": error,
            "open_mode": str(opts.get("open-mode", "truncate")),
            "partition": partition.split(",")[0], "deps": deps,
            "kill_invalid": str(opts.get("kill-on-invalid-dep", "no")).lower() in ("yes", "1", "true"),
            "submit": now(), "tasks": tasks,
            "kill_after": env_float("FAKE_SLURM_KILL_AFTER", 0.5),
            "requeue_delay": env_float("FAKE_SLURM_REQUEUE_DELAY", 0.3),
            "preempt_show": env_float("FAKE_SLURM_PREEMPT_SHOW", 0.3),
            "vanish_after": env_float("FAKE_SLURM_VANISH_AFTER", 0.3),
            "purge_after": env_float("FAKE_SLURM_PURGE_AFTER", -1),
            "runner": None,
            "array_min": indices[0] if is_array else None,
            "array_max": indices[-1] if is_array else None,
            "array_count": n if is_array else None,
        }
        with open(os.path.join(d, "scripts", "%d.env.json" % job_id), "w") as f:
            json.dump(build_env(opts), f)
        st.add_job(job)
        spawn_runner(job)
    if opts.get("parsable"):
        print(job_id)
    else:
        print("Submitted batch job %d" % job_id)
    return 0


def spawn_runner(job):
    """Start the job's runner unless it is alive. Call with the lock held."""
    import subprocess
    pid = job.get("runner")
    if pid:
        try:
            os.kill(pid, 0)
            return
        except OSError:
            pass
    p = subprocess.Popen(
        [sys.executable, "-S", os.path.abspath(__file__), "--runner", str(job["id"])],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, env=dict(os.environ))
    job["runner"] = p.pid


# ---------------------------------------------------------------- runner

def expand_pattern(pat, job, task):
    def sub(m):
        width, c = m.group(1), m.group(2)
        if c == "%":
            return "%"
        val = {
            "A": job["id"],
            "a": task["idx"] if task["idx"] is not None else NO_ARRAY_INDEX,
            "j": task["id"], "J": "%d.batch" % task["id"], "x": job["name"],
            "u": os.environ.get("USER", "root"), "N": node_name(), "n": 0, "t": 0,
            "s": "batch",
        }.get(c)
        if val is None:
            return m.group(0)
        if width and isinstance(val, int):
            return str(val).zfill(int(width))
        return str(val)
    return re.sub(r"%(\d*)([%AajJxuNnts])", sub, pat)


_ENV_CACHE = {}


def task_env(job, task):
    if job["id"] not in _ENV_CACHE:
        with open(os.path.join(state_dir(), "scripts", "%d.env.json" % job["id"])) as f:
            _ENV_CACHE[job["id"]] = json.load(f)
    env = dict(_ENV_CACHE[job["id"]])
    for k in list(env):
        if k.startswith("SLURM_ARRAY_") or k in ("SLURM_RESTART_COUNT", "SLURM_JOB_ID", "SLURM_JOBID"):
            del env[k]
    node = node_name()
    env.update({
        "SLURM_JOB_ID": str(task["id"]), "SLURM_JOBID": str(task["id"]),
        "SLURM_JOB_NAME": job["name"], "SLURMD_NODENAME": node,
        "SLURM_JOB_NODELIST": node, "SLURM_NODELIST": node,
        "SLURM_JOB_PARTITION": job["partition"], "SLURM_CLUSTER_NAME": "lmgeo-test",
        "SLURM_SUBMIT_DIR": job["submit_dir"], "SLURM_CPUS_ON_NODE": str(job["opts"].get("cpus-per-task", 1)),
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
    })
    if "cpus-per-task" in job["opts"]:
        env["SLURM_CPUS_PER_TASK"] = str(job["opts"]["cpus-per-task"])
    if job["array"]:
        env.update({
            "SLURM_ARRAY_JOB_ID": str(job["id"]), "SLURM_ARRAY_TASK_ID": str(task["idx"]),
            "SLURM_ARRAY_TASK_COUNT": str(job["array_count"]),
            "SLURM_ARRAY_TASK_MIN": str(job["array_min"]), "SLURM_ARRAY_TASK_MAX": str(job["array_max"]),
            "SLURM_ARRAY_TASK_STEP": "1",
        })
    if task["restarts"]:
        # Real Slurm leaves it unset on the first run (log-plain-job.txt).
        env["SLURM_RESTART_COUNT"] = str(task["restarts"])
    return env


def open_logs(job, task):
    mode = "a" if job["open_mode"] == "append" else "w"
    out = os.path.join(job["cwd"], expand_pattern(job["output"], job, task))
    err = os.path.join(job["cwd"], expand_pattern(job["error"], job, task)) if job["error"] else None
    fo = open(out, mode)
    fe = open(err, mode) if err and os.path.abspath(err) != os.path.abspath(out) else None
    task["log"] = err or out
    return fo, fe


def append_log(task, line):
    if task.get("log"):
        try:
            with open(task["log"], "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def task_is_gone(job, task, t=None):
    """Hidden from squeue: vanished (lost) or purged after FAKE_SLURM_PURGE_AFTER."""
    t = t or now()
    if task.get("vanished"):
        return True
    pa = job.get("purge_after", -1)
    return pa is not None and pa >= 0 and is_final(task) and task["end"] is not None and t - task["end"] >= pa


def find_targets(st, jid, tid):
    """Tasks a dependency / scancel / scontrol id names: 'N' (a whole array or
    one task's own job id) or 'N_T'."""
    out = []
    for job in st.jobs():
        if tid is None:
            if job["id"] == jid:
                out.extend((job, t) for t in job["tasks"])
            else:
                out.extend((job, t) for t in job["tasks"] if t["id"] == jid and job["array"])
        elif job["id"] == jid and job["array"]:
            out.extend((job, t) for t in job["tasks"] if t["idx"] == tid)
    return out


def dep_status(st, job):
    """'ok', 'wait' or 'never' for the job's --dependency."""
    if not job["deps"]:
        return "ok"
    t_now = now()
    alt_results = []
    for group in job["deps"]:
        res = "ok"
        for kind, jid, tid in group:
            if kind == "singleton":
                others = [j for j in st.jobs() if j["name"] == job["name"] and j["id"] < job["id"]]
                if any(not is_final(t) and not task_is_gone(j, t, t_now) for j in others for t in j["tasks"]):
                    res = "wait"
                continue
            # Slurm drops a dependency on a job it does not know (an unknown or
            # purged id): it counts as satisfied (sbatch-dependency-unknown-job).
            targets = [(j, t) for j, t in find_targets(st, jid, tid) if not task_is_gone(j, t, t_now)]
            if not targets:
                continue
            states = [t["state"] if is_final(t) else "ACTIVE" for _, t in targets]
            ended = all(s in FINAL for s in states)
            if kind == "after":
                r = "ok" if all(t["started_ever"] or is_final(t) for _, t in targets) else "wait"
            elif kind in ("afterany", "afterburstbuffer"):
                r = "ok" if ended else "wait"
            elif kind in ("afterok", "aftercorr"):
                if any(s in FINAL and s != "COMPLETED" for s in states):
                    r = "never"
                else:
                    r = "ok" if ended else "wait"
            else:  # afternotok
                if any(s in FINAL and s != "COMPLETED" for s in states):
                    r = "ok" if ended else "wait"
                else:
                    r = "never" if ended else "wait"
            if r == "never":
                res = "never"
            elif r == "wait" and res == "ok":
                res = "wait"
        alt_results.append(res)
    if "ok" in alt_results:
        return "ok"
    if "wait" in alt_results:
        return "wait"
    return "never"


def kill_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def run_job(job_id):
    d = state_dir()
    logpath = os.path.join(d, "runner-%s.log" % job_id)
    procs = {}  # task id -> dict(p, restarts, files, term_at)
    deadline = now() + env_float("FAKE_SLURM_RUNNER_TIMEOUT", 900)
    try:
        while True:
            if not os.path.isdir(d) or now() > deadline:
                for pr in procs.values():
                    kill_group(pr["p"].pid, signal.SIGKILL)
                return
            busy = runner_step(job_id, procs)
            if not busy and not procs:
                return
            time.sleep(POLL if procs else 2 * POLL)
    except Exception:
        import traceback
        with open(logpath, "a") as f:
            f.write(traceback.format_exc())
        for pr in procs.values():
            kill_group(pr["p"].pid, signal.SIGKILL)


def runner_step(job_id, procs):
    """One pass over the job. Returns False when nothing more will happen."""
    with State() as st:
        job = st.job(job_id)
        if job is None:
            return False
        if job.get("runner") != os.getpid():
            # Another runner took over (scontrol requeue/release after we ended).
            if job.get("runner") and pid_alive(job["runner"]):
                return bool(procs)
            job["runner"] = os.getpid()
        t_now = now()
        tasks = {t["id"]: t for t in job["tasks"]}

        # 1. processes: reap, and kill those whose task was cancelled/requeued
        for tid, pr in list(procs.items()):
            t = tasks[tid]
            rc = pr["p"].poll()
            mine = t["state"] == "RUNNING" and t["restarts"] == pr["restarts"]
            if rc is not None:
                for f in pr["files"]:
                    f.close()
                if mine:
                    t["state"] = "COMPLETED" if rc == 0 else "FAILED"
                    t["reason"] = "None" if rc == 0 else "NonZeroExitCode"
                    t["exit"] = rc if rc >= 0 else 128 - rc
                    t["end"] = t_now
                elif t.get("kill_msg"):
                    append_log(t, t.pop("kill_msg"))
                del procs[tid]
                continue
            if mine:
                # scenario kills of the first attempt
                sc = t["scenarios"]
                if t["restarts"] == 0 and t_now - t["start"] >= job["kill_after"] and \
                        any(s in sc for s in ("requeue", "preempt", "preempt_cancel", "timeout")):
                    node = node_name()
                    if "timeout" in sc:
                        set_final(t, "TIMEOUT", "TimeLimit", t_now)
                        t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s DUE TO TIME LIMIT ***" % (node, t["id"], node, stamp())
                    elif "preempt_cancel" in sc:
                        set_final(t, "PREEMPTED", "None", t_now)
                        t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s DUE TO PREEMPTION ***" % (node, t["id"], node, stamp())
                    elif "preempt" in sc:
                        requeue_task(job, t, t_now, show="PREEMPTED", show_for=job["preempt_show"])
                        t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s DUE TO PREEMPTION ***" % (node, t["id"], node, stamp())
                    else:
                        requeue_task(job, t, t_now, show="COMPLETING", show_for=0.1)
                        t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s DUE TO NODE FAILURE, REQUEUED ***" % (node, t["id"], node, stamp())
                    mine = False
            if not mine:
                if pr["term_at"] is None:
                    kill_group(pr["p"].pid, signal.SIGTERM)
                    pr["term_at"] = t_now
                elif t_now - pr["term_at"] > 1.0:
                    kill_group(pr["p"].pid, signal.SIGKILL)

        # 2. timed transitions (COMPLETING/PREEMPTED -> PENDING BeginTime)
        for t in job["tasks"]:
            if t.get("then") and t["then_at"] is not None and t_now >= t["then_at"] and t["id"] not in procs:
                t["state"], t["reason"] = t["then"]
                t["then"], t["then_at"] = None, None

        # 3. vanish
        for t in job["tasks"]:
            if "vanish" in t["scenarios"] and not t.get("vanished") and t["state"] == "PENDING" \
                    and t_now - job["submit"] >= job["vanish_after"]:
                t["vanished"] = True
                t["state"], t["reason"] = "PENDING", "None"

        # 4. dependencies
        pending = [t for t in job["tasks"] if t["state"] == "PENDING" and not t.get("vanished")]
        ds = dep_status(st, job) if pending else "ok"
        if ds == "never":
            for t in pending:
                if job["kill_invalid"]:
                    set_final(t, "CANCELLED", "DependencyNeverSatisfied", t_now)
                elif not t["held"]:
                    t["reason"] = "DependencyNeverSatisfied"
        elif ds == "wait":
            for t in pending:
                if not t["held"]:
                    t["reason"] = "Dependency"
        else:
            if job["deps"]:
                job["deps"] = None  # satisfied once: Slurm clears it
            # 5. start what the throttle allows
            running = sum(1 for t in job["tasks"] if t["state"] in ("RUNNING", "COMPLETING") or t["id"] in procs)
            for t in job["tasks"]:
                if t["state"] != "PENDING" or t.get("vanished") or t["held"] or t.get("then") \
                        or "vanish" in t["scenarios"]:
                    continue
                if t["eligible_at"] > t_now:
                    t["reason"] = "BeginTime"
                    continue
                if job["throttle"] and running >= job["throttle"]:
                    t["reason"] = "JobArrayTaskLimit"
                    continue
                start_task(job, t, procs, t_now)
                if t["state"] == "RUNNING":
                    running += 1

        busy = any(not is_final(t) and not t.get("vanished") for t in job["tasks"])
        if not busy and not procs:
            job["runner"] = None
        return busy


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def set_final(t, state, reason, t_now):
    t["state"], t["reason"], t["end"] = state, reason, t_now
    t["then"], t["then_at"] = None, None


def requeue_task(job, t, t_now, show="COMPLETING", show_for=0.1):
    """Back to PENDING (reason BeginTime) with one more restart, showing `show`
    for `show_for` seconds first, as Slurm does after a requeue or preemption."""
    t["restarts"] += 1
    t["state"], t["reason"] = show, "None"
    t["then"] = ("PENDING", "BeginTime")
    t["then_at"] = t_now + show_for
    t["eligible_at"] = t_now + show_for + job["requeue_delay"]
    t["exit"], t["end"] = None, None


def start_task(job, t, procs, t_now):
    import subprocess
    t["started_ever"] = True
    t["start"] = t_now
    t["reason"] = "None"
    try:
        fo, fe = open_logs(job, t)
    except OSError:
        # Slurm cannot open the output file: the job fails without a log.
        set_final(t, "FAILED", "NonZeroExitCode", t_now)
        t["exit"] = 1
        return
    sc = t["scenarios"]
    if ("fail" in sc or "fail_once" in sc) and t["restarts"] == 0:
        fo.write("fake-slurm: task %s of job %d failed on purpose (FAKE_SLURM_FAIL%s)\n"
                 % (t["idx"] if t["idx"] is not None else "-", job["id"], "_ONCE" if "fail_once" in sc else ""))
        fo.close()
        if fe:
            fe.close()
        set_final(t, "FAILED", "NonZeroExitCode", t_now)
        t["exit"] = 1
        return
    try:
        p = subprocess.Popen(
            ["bash", job["script"]] + list(job["args"]), cwd=job["cwd"], env=task_env(job, t),
            stdin=subprocess.DEVNULL, stdout=fo, stderr=fe or fo, start_new_session=True, close_fds=True)
    except OSError as e:
        fo.write("fake-slurm: cannot start: %s\n" % e)
        fo.close()
        if fe:
            fe.close()
        set_final(t, "FAILED", "NonZeroExitCode", t_now)
        t["exit"] = 1
        return
    t["state"] = "RUNNING"
    t["pid"] = p.pid
    procs[t["id"]] = {"p": p, "restarts": t["restarts"], "files": [f for f in (fo, fe) if f], "term_at": None}


# ---------------------------------------------------------------- squeue

def parse_format(fmt):
    """'%.18i|%T' -> list of (literal) str or (field, width, right)."""
    out, i = [], 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        m = re.match(r"%(\.?)(\d*)(.)", fmt[i:])
        if not m:
            out.append(fmt[i:])
            break
        if m.group(3) == "%":
            out.append("%")
        else:
            out.append((m.group(3), int(m.group(2)) if m.group(2) else 0, bool(m.group(1))))
        i += m.end()
    return out


HEADERS = {"i": "JOBID", "A": "JOBID", "F": "ARRAY_JOB_ID", "K": "ARRAY_TASK_ID",
           "T": "STATE", "t": "ST", "r": "REASON", "R": "NODELIST(REASON)", "j": "NAME",
           "a": "ACCOUNT", "u": "USER", "P": "PARTITION", "M": "TIME", "D": "NODES",
           "N": "NODELIST", "C": "CPUS", "l": "TIME_LIMIT", "Z": "WORK_DIR",
           "o": "COMMAND", "q": "QOS", "V": "SUBMIT_TIME", "S": "START_TIME",
           "e": "END_TIME", "y": "NICE", "Q": "PRIORITY"}


def elapsed(t, t_now):
    if not t["start"] or t["state"] == "PENDING":
        return "0:00"
    s = int((t["end"] if t["end"] else t_now) - t["start"])
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


def field(c, row, t_now):
    job, t, jobid_str = row["job"], row["task"], row["i"]
    state, reason = row["state"], row["reason"]
    if c == "i":
        return jobid_str
    if c == "A":
        return str(t["id"])
    if c == "F":
        return str(job["id"])
    if c == "K":
        return row["K"]
    if c == "T":
        return state
    if c == "t":
        return STATE_CODES.get(state, state)
    if c == "r":
        return reason
    if c == "R":
        return node_name() if state in ("RUNNING", "COMPLETING") else "(%s)" % reason
    if c == "j":
        return job["name"]
    if c in ("a", "q"):
        return "(null)"
    if c == "u":
        return os.environ.get("USER", "root")
    if c == "P":
        return job["partition"]
    if c == "M":
        return elapsed(t, t_now)
    if c == "D":
        return "1"
    if c == "N":
        return node_name() if state in ("RUNNING", "COMPLETING") else ""
    if c == "C":
        return str(job["opts"].get("cpus-per-task", 1))
    if c == "l":
        return str(job["opts"].get("time", "UNLIMITED"))
    if c == "Z":
        return job["cwd"]
    if c == "o":
        return job["script_path"] or "(null)"
    if c in ("V", "S", "e"):
        v = {"V": job["submit"], "S": t["start"], "e": t["end"]}[c]
        return stamp(v) if v else "N/A"
    if c == "y":
        return "0"
    if c == "Q":
        return "4294901760"
    return ""


def cmd_squeue(argv):
    fmt = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
    header, expand, names, states, jobs_filter = True, False, None, None, None
    i = 0

    def val():
        nonlocal i
        a = argv[i]
        if a.startswith("--") and "=" in a:
            return a.split("=", 1)[1]
        if not a.startswith("--") and len(a) > 2:
            return a[2:]
        i += 1
        if i >= len(argv):
            raise ValueError("option '%s' requires an argument" % a)
        return argv[i]

    try:
        while i < len(argv):
            a = argv[i]
            key = a.split("=", 1)[0] if a.startswith("--") else a[:2]
            if key in ("--noheader", "-h"):
                header = False
            elif key in ("--array", "-r"):
                expand = True
            elif key in ("--me", "--all", "-a", "--long", "-l", "--verbose", "-v"):
                pass
            elif key in ("--name", "-n"):
                names = set(val().split(","))
            elif key in ("--states", "-t"):
                states = [s.strip().upper() for s in val().split(",")]
            elif key in ("--format", "-o"):
                fmt = val()
            elif key in ("--jobs", "-j"):
                jobs_filter = val().split(",")
            elif key in ("--user", "-u", "--sort", "-S", "--partition", "-p", "--account", "-A",
                         "--qos", "-q", "--clusters", "-M", "--iterate", "-i"):
                val()
            else:
                return die("squeue", "squeue: unrecognized option '%s'\nTry \"squeue --help\" for more information" % a)
            i += 1
    except ValueError as e:
        return die("squeue", "squeue: %s" % e)

    if states is None:
        want = ACTIVE
    elif "ALL" in states:
        want = None
    else:
        by_code = {v: k for k, v in STATE_CODES.items()}
        want = {by_code.get(s, s) for s in states}

    t_now = now()
    with State(write=False) as st:
        selected = None
        if jobs_filter is not None:
            selected = set()
            for jid in jobs_filter:
                m = re.fullmatch(r"(\d+)(?:_(\d+))?", jid.strip())
                if not m:
                    return die("squeue", "Invalid job id: %s" % jid)
                for j, t in find_targets(st, int(m.group(1)), int(m.group(2)) if m.group(2) else None):
                    if not task_is_gone(j, t, t_now):
                        selected.add((j["id"], t["id"]))
            if not selected and len(jobs_filter) == 1:
                return die("squeue", "slurm_load_jobs error: Invalid job id specified")
        rows = []
        for job in st.jobs():
            if names is not None and job["name"] not in names:
                continue
            group = []
            for t in job["tasks"]:
                if task_is_gone(job, t, t_now):
                    continue
                if selected is not None and (job["id"], t["id"]) not in selected:
                    continue
                state = t["state"]
                if want is not None and state not in want:
                    continue
                row = {"job": job, "task": t, "state": state, "reason": t["reason"]}
                if job["array"]:
                    row["i"] = "%d_%d" % (job["id"], t["idx"])
                    row["K"] = str(t["idx"])
                else:
                    row["i"] = str(t["id"])
                    row["K"] = "N/A"
                # Without --array, Slurm prints the array tasks it has not
                # split off yet (never started) on one line: 20_[2-7%2].
                if job["array"] and not expand and state == "PENDING" and not t["started_ever"] \
                        and t["restarts"] == 0:
                    group.append(row)
                else:
                    rows.append(row)
            if len(group) > 1:
                idx = [r["task"]["idx"] for r in group]
                g = dict(group[-1])
                g["i"] = "%d_[%s%s]" % (job["id"], compress(idx),
                                       "%%%d" % job["throttle"] if job["throttle"] else "")
                g["K"] = "[%s%s]" % (compress(idx), "%%%d" % job["throttle"] if job["throttle"] else "")
                g["task"] = dict(group[-1]["task"], id=job["id"])
                rows.insert(len(rows) - sum(1 for r in rows if r["job"] is job), g)
            else:
                rows.extend(group)
    parts = parse_format(fmt)

    def render(get):
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
            else:
                c, width, right = p
                s = get(c)
                if width:
                    s = s[:width] if right else s
                    s = s.rjust(width) if right else s.ljust(width)
                out.append(s)
        return "".join(out).rstrip() if " " in fmt else "".join(out)

    lines = []
    if header:
        lines.append(render(lambda c: HEADERS.get(c, c.upper())))
    for r in rows:
        lines.append(render(lambda c, r=r: field(c, r, t_now)))
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---------------------------------------------------------------- scancel

def cmd_scancel(argv):
    ids, names, verbose = [], None, False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--name=") or a in ("-n", "--name"):
            if "=" in a:
                names = set(a.split("=", 1)[1].split(","))
            else:
                i += 1
                names = set(argv[i].split(","))
        elif a in ("-v", "--verbose"):
            verbose = True
        elif a.startswith("--user") or a in ("-u", "--signal", "-s", "--state", "-t", "--partition", "-p",
                                             "--account", "-A", "--qos", "-q"):
            if "=" not in a:
                i += 1
        elif a.startswith("-"):
            pass  # --full, --batch, --quiet, --interactive ... ignored
        else:
            ids.append(a)
        i += 1
    parsed = []
    for s in ids:
        for part in s.split(","):
            m = re.fullmatch(r"(\d+)(?:_(\d+|\[[\d,\-]+\]))?", part)
            if not m:
                return die("scancel", "scancel: error: Invalid job id %s" % part)
            if m.group(2) and m.group(2).startswith("["):
                lst = parse_array(m.group(2)[1:-1])
                for idx in (lst[0] if lst else []):
                    parsed.append((part, int(m.group(1)), idx))
            else:
                parsed.append((part, int(m.group(1)), int(m.group(2)) if m.group(2) else None))
    t_now = now()
    with State() as st:
        targets = []
        for text, jid, tid in parsed:
            found = [(j, t) for j, t in find_targets(st, jid, tid) if not task_is_gone(j, t, t_now)]
            if not found and verbose:
                sys.stderr.write("scancel: Terminating job %s\n" % text)
                sys.stderr.write("scancel: error: Kill job error on job id %s: Invalid job id specified\n" % text)
            targets.extend(found)
        if names is not None:
            for job in st.jobs():
                if job["name"] in names:
                    targets.extend((job, t) for t in job["tasks"] if not task_is_gone(job, t, t_now))
        for job, t in targets:
            if is_final(t):
                continue
            if t["state"] in ("RUNNING", "COMPLETING") or t.get("then"):
                node = node_name()
                t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s ***" % (node, t["id"], node, stamp())
                set_final(t, "CANCELLED", "None", t_now)
            else:
                # a pending task keeps its last reason (squeue-cancelled-array-2-by-name.txt)
                set_final(t, "CANCELLED", t["reason"], t_now)
    return 0


# ---------------------------------------------------------------- scontrol

def cmd_scontrol(argv):
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        return die("scontrol", "scontrol: no command given")
    verb = args[0].lower()
    if verb == "show" and len(args) >= 2 and args[1].lower() in ("config", "conf"):
        with open(CONFIG_TEMPLATE) as f:
            text = f.read()
        text = re.sub(r"^(MaxArraySize\s*= )\d+$", lambda m: m.group(1) + str(max_array_size()),
                      text, flags=re.M)
        sys.stdout.write(text)
        return 0
    if verb == "show" and len(args) >= 2 and args[1].lower() == "job":
        return show_job(args[2] if len(args) > 2 else None)
    if verb == "ping":
        print("Slurmctld(primary) at %s is UP" % node_name())
        return 0
    if verb in ("requeue", "release", "hold", "requeuehold"):
        rc = 0
        ids = ",".join(args[1:]).split(",")
        t_now = now()
        with State() as st:
            for s in ids:
                m = re.fullmatch(r"(\d+)(?:_(\d+))?", s)
                found = [(j, t) for j, t in find_targets(st, int(m.group(1)), int(m.group(2)) if m.group(2) else None)
                         if not task_is_gone(j, t, t_now)] if m else []
                if not found:
                    sys.stderr.write("Invalid job id specified for job %s\n" % s)
                    if verb == "release":
                        sys.stderr.write("slurm_suspend error: Invalid job id specified\n")
                    rc = 1
                    continue
                if verb in ("requeue", "requeuehold"):
                    if any(t["state"] == "PENDING" for _, t in found):
                        if m.group(2):
                            sys.stderr.write("%s: Job is pending execution\n" % s)
                        else:
                            sys.stderr.write("Job is pending execution for job %s\n" % s)
                        rc = 1
                        continue
                    for job, t in found:
                        if t["state"] in ("RUNNING", "COMPLETING"):
                            node = node_name()
                            t["kill_msg"] = "slurmstepd-%s: error: *** JOB %d ON %s CANCELLED AT %s DUE TO JOB REQUEUE ***" % (node, t["id"], node, stamp())
                        t["scenarios"] = []  # an explicit requeue replaces the scenario
                        requeue_task(job, t, t_now, show="COMPLETING", show_for=0.1)
                        if verb == "requeuehold":
                            t["held"] = True
                            t["then"] = ("PENDING", "JobHeldUser")
                        spawn_runner(job)
                elif verb == "release":
                    for job, t in found:
                        if t["held"]:
                            t["held"] = False
                            if t["state"] == "PENDING":
                                t["reason"] = "None"
                        spawn_runner(job)
                else:  # hold
                    for job, t in found:
                        if t["state"] == "PENDING":
                            t["held"] = True
                            t["reason"] = "JobHeldUser"
        return rc
    return die("scontrol", "invalid keyword: %s" % args[0])


def show_job(spec):
    """A subset of `scontrol show job` (see scontrol-show-job-requeued.txt)."""
    t_now = now()
    with State(write=False) as st:
        m = re.fullmatch(r"(\d+)(?:_(\d+))?", spec or "")
        found = [(j, t) for j, t in find_targets(st, int(m.group(1)), int(m.group(2)) if m.group(2) else None)
                 if not task_is_gone(j, t, t_now)] if m else []
        if not found:
            return die("scontrol", "slurm_load_jobs error: Invalid job id specified")
        out = []
        for job, t in found:
            head = "JobId=%d" % t["id"]
            if job["array"]:
                head += " ArrayJobId=%d ArrayTaskId=%d" % (job["id"], t["idx"])
            head += " JobName=%s" % job["name"]
            deps = job["opts"].get("dependency") if job["deps"] else None
            exit_code = t["exit"] if t["exit"] is not None else 0
            out.append("\n".join([
                head,
                "   JobState=%s Reason=%s Dependency=%s" % (t["state"], t["reason"], deps or "(null)"),
                "   Requeue=1 Restarts=%d BatchFlag=1 Reboot=0 ExitCode=%d:0" % (t["restarts"], exit_code),
                "   Partition=%s" % job["partition"],
                "   WorkDir=%s" % job["cwd"],
                "   StdErr=%s" % os.path.join(job["cwd"], expand_pattern(job["error"] or job["output"], job, t)),
                "   StdOut=%s" % os.path.join(job["cwd"], expand_pattern(job["output"], job, t)),
            ]) + "\n\n")
        sys.stdout.write("".join(out))
    return 0


# ---------------------------------------------------------------- entry

COMMANDS = {"sbatch": cmd_sbatch, "squeue": cmd_squeue, "scancel": cmd_scancel, "scontrol": cmd_scontrol}


def main(prog, argv):
    record_call(prog, argv)
    return COMMANDS[prog](argv)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--runner":
        os.chdir("/")
        run_job(int(sys.argv[2]))
        sys.exit(0)
    prog = os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else ""
    if prog not in COMMANDS:
        sys.stderr.write("usage: fakeslurm.py sbatch|squeue|scancel|scontrol ARGS...\n")
        sys.exit(2)
    sys.exit(main(prog, sys.argv[2:]))
