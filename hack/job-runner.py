#!/usr/bin/env python3
"""A stand-in kubelet for the test control plane: it runs Job pods as local processes.

    hack/job-runner.py --kubeconfig PATH --keyward PATH/TO/keyward
                       [--node keyward-job-runner] [--log-dir DIR] [--until-stdin-closes]

hack/control-plane.sh runs no kubelet, and kwok only pretends to run pods. This script
plays the kubelet of one Node (default `keyward-job-runner`) so that batch/v1 Jobs run
for real and kube-controller-manager's Job controller sees real outcomes:

- It creates (or adopts) the Node, labelled `keyward.io/job-runner=true` and tainted
  `keyward.io/job-runner=true:NoSchedule`, without kwok's annotation (kwok leaves it
  alone), and keeps it Ready: its Lease in kube-node-lease and its Ready heartbeat are
  renewed every 10 s. It prints `job-runner ready` on stdout once the node is Ready and
  schedulable.
- It watches the pods bound to that node. A Pending pod owned by a Job has its single
  container run as a local process: `keyward` (by basename) is the --keyward binary and
  `sh` is /bin/sh (an escape hatch for the runner's own tests); anything else fails to
  start (exit code 128, reason StartError), as an image without that binary would. The
  process gets the container's plain `env` values ($(VAR) references expanded), HOME and
  a working directory of its own, and KUBECONFIG naming a kubeconfig that authenticates
  as the pod's service account with a pod-bound token from the TokenRequest API (renewed
  like a kubelet renews projected tokens), so the Job's RBAC is exercised for real. A
  pod that does not automount a token gets no KUBECONFIG.
- The pod's status follows the process: Running when it starts, then Succeeded (exit 0)
  or Failed with containerStatuses[0].state.terminated.exitCode, so backoffLimit and
  podFailurePolicy rules on exit codes behave as on a real cluster. A process killed by a
  signal reports 128+signal (137 for SIGKILL).
- A pod deleted while its process runs has the process SIGKILLed, is marked Failed and
  is then deleted with grace period 0, as a kubelet finishes a graceful deletion; its
  finalizers are left to their owners (the Job controller removes its own).
- SIGUSR1 SIGKILLs every process it runs (chaos for tests); with --until-stdin-closes,
  a line `kill-jobs NAMESPACE` on standard input SIGKILLs those of one namespace's pods
  (tests sharing the runner kill only their own). SIGTERM/SIGINT, and with
  --until-stdin-closes the end of standard input, stop it, killing its processes; a
  watchdog process kills them too if the runner itself is SIGKILLed.

Each process's output goes to LOG_DIR/<namespace>_<pod>.log and, prefixed with
`[namespace/pod]`, to standard error. kubectl comes from $KUBEBUILDER_ASSETS, else from
hack/test-bins.sh, as in the other hack scripts. Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

LABEL = "keyward.io/job-runner"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
FIELD_MANAGER = "keyward-job-runner"
HEARTBEAT_SECONDS = 10
LEASE_SECONDS = 40
RELIST_SECONDS = 10
POLL_SECONDS = 0.3
KUBECTL_TIMEOUT = 20  # seconds for any one kubectl call; its request timeout is shorter
TOKEN_SECONDS = 3607  # what the kubelet asks for a projected token
START_RETRY_SECONDS = 2
HOST_IP = "127.0.0.1"

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT_LOCK = threading.Lock()


def log(message):
    with OUTPUT_LOCK:
        sys.stderr.write(f"job-runner: {message}\n")
        sys.stderr.flush()


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_kubectl():
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        assets = subprocess.run(
            [os.path.join(HERE, "test-bins.sh")], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
    kubectl = os.path.join(assets, "kubectl")
    if not os.access(kubectl, os.X_OK):
        sys.exit(f"job-runner: {kubectl} is missing")
    return kubectl


class Failure(Exception):
    """Something the runner cannot go on without (at startup)."""


class Shutdown(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the main loop at once."""


class Kubectl:
    """kubectl calls that never hang and never raise: each returns (ok, stdout, stderr)."""

    def __init__(self, binary, kubeconfig):
        self.base = [binary, "--kubeconfig", kubeconfig, f"--request-timeout={KUBECTL_TIMEOUT - 5}s"]

    def __call__(self, *args, stdin=None):
        try:
            done = subprocess.run(
                self.base + list(args),
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                timeout=KUBECTL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return False, "", f"kubectl {' '.join(args[:3])} timed out after {KUBECTL_TIMEOUT}s"
        except OSError as error:
            return False, "", f"kubectl did not run: {error}"
        return done.returncode == 0, done.stdout, done.stderr.strip()

    def json(self, *args, stdin=None):
        ok, out, err = self(*args, "-o", "json", stdin=stdin)
        if not ok:
            return None, err
        try:
            return json.loads(out), ""
        except ValueError as error:
            return None, f"unparsable kubectl output: {error}"


def not_found(error):
    return "NotFound" in error or "not found" in error


class Run:
    """One pod's container, running as a local process."""

    def __init__(self, pod, process, log_path, workdir, started, token_path, reader):
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.container = pod["spec"]["containers"][0]
        self.process = process
        self.log_path = log_path
        self.workdir = workdir
        self.started = started
        self.token_path = token_path
        self.token_time = time.monotonic()
        self.reader = reader
        self.pod_gone = False
        self.deleting = False

    def exit_code(self):
        """The exit status if the process has exited, without reaping it (so its process
        group id cannot be reused before the group is killed)."""
        if self.process.returncode is not None:
            return self.process.returncode
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.process.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    def kill(self):
        # The process leads its own process group: everything it started dies with it,
        # as everything in a container does.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Runner:
    def __init__(self, options, kubectl_binary, log_dir):
        self.options = options
        self.node = options.node
        self.kubectl_binary = kubectl_binary
        self.kubectl = Kubectl(kubectl_binary, options.kubeconfig)
        self.log_dir = log_dir
        self.setpriv = shutil.which("setpriv")
        self.events = queue.Queue()
        self.stopping = threading.Event()
        self.pods = {}  # uid -> the latest pod object seen
        self.runs = {}  # uid -> Run
        self.finished = set()  # uids this runner has nothing more to do for
        self.ignored = set()  # uids of pods not owned by a Job (logged once)
        self.retry_at = {}  # uid -> when to try starting the pod again
        self.complained = {}  # uid -> when a failed start was last logged
        self.reports = {}  # uid -> [namespace, name, status patch, delete after?, attempts, next try]
        self.watcher = None
        self.watchdog = None
        self.next_relist = 0.0
        self.next_ip = 1
        self.sigusr1 = 0
        self.chaos = 0  # how many SIGUSR1s arrived
        self.chaos_logged = 0
        self.version = None
        self.server = self.ca_data = self.insecure = None
        self.node_uid = None
        self.ready_since = rfc3339(now())
        self.identity = f"{FIELD_MANAGER}-{os.getpid()}@{os.uname().nodename}"

    # --- the node ------------------------------------------------------------------

    def read_kubeconfig(self):
        """The server and CA that the pods' kubeconfigs name."""
        config, error = self.kubectl.json("config", "view", "--raw", "--minify", "--flatten")
        if config is None:
            raise Failure(f"cannot read {self.options.kubeconfig}: {error}")
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.ca_data = cluster.get("certificate-authority-data")
        self.insecure = cluster.get("insecure-skip-tls-verify", False)

    def node_status(self):
        stamp = rfc3339(now())
        pressure = [
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        ]
        conditions = [
            {
                "type": kind,
                "status": "False",
                "reason": reason,
                "message": "the job runner does not track this",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self.ready_since,
            }
            for kind, reason in pressure
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "hack/job-runner.py is running Job pods on this node",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self.ready_since,
            }
        )
        resources = {"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "500Gi"}
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": os.uname().machine,
                "operatingSystem": "linux",
                "kernelVersion": os.uname().release,
                "osImage": "hack/job-runner.py",
                "containerRuntimeVersion": "local-process://0",
                "kubeletVersion": self.server_version(),
                "kubeProxyVersion": "",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        }

    def server_version(self):
        if self.version is None:
            version, _ = self.kubectl.json("version")
            self.version = ((version or {}).get("serverVersion") or {}).get("gitVersion", "v0.0.0")
        return self.version

    def wait_for_other_runner(self):
        """Two runners playing one node would each run every pod: waits until the lease
        of another runner (one that crashed) expires, and gives up on a live one."""
        deadline = time.monotonic() + LEASE_SECONDS + 5
        logged = False
        while True:
            lease, _ = self.kubectl.json("get", "lease", self.node, "-n", "kube-node-lease")
            spec = (lease or {}).get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            renewed = spec.get("renewTime")
            if not holder.startswith(FIELD_MANAGER) or holder == self.identity or not renewed:
                return
            age = (now() - datetime.datetime.strptime(renewed, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)).total_seconds()
            if age > spec.get("leaseDurationSeconds", LEASE_SECONDS):
                return
            if time.monotonic() > deadline:
                raise Failure(f"another job runner ({holder}) plays node {self.node}")
            if not logged:
                log(f"node {self.node} is held by {holder}; waiting for its lease to expire")
                logged = True
            time.sleep(2)

    def ensure_node(self):
        taint = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
        node, error = self.kubectl.json("get", "node", self.node)
        if node is None and not not_found(error):
            raise Failure(f"cannot read node {self.node}: {error}")
        if node is None:
            manifest = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node,
                    "labels": {
                        LABEL: "true",
                        "kubernetes.io/hostname": self.node,
                        "kubernetes.io/os": "linux",
                    },
                },
                "spec": {"taints": [taint]},
                "status": self.node_status(),
            }
            node, error = self.kubectl.json("create", "-f", "-", stdin=json.dumps(manifest))
            if node is None:
                raise Failure(f"cannot create node {self.node}: {error}")
            log(f"created node {self.node}")
        else:
            annotations = node["metadata"].get("annotations") or {}
            if KWOK_ANNOTATION in annotations:
                raise Failure(f"node {self.node} is kwok's ({KWOK_ANNOTATION}); choose another --node")
            taints = node["spec"].get("taints") or []
            if not any(t.get("key") == LABEL and t.get("effect") == "NoSchedule" for t in taints):
                patch = [{"op": "add", "path": "/spec/taints", "value": taints + [taint]}]
                self.kubectl("patch", "node", self.node, "--type=json", "-p", json.dumps(patch))
            labels = {"metadata": {"labels": {LABEL: "true"}}}
            self.kubectl("patch", "node", self.node, "--type=merge", "-p", json.dumps(labels))
            log(f"adopted node {self.node}")
        self.node_uid = node["metadata"]["uid"]
        self.heartbeat()

    def heartbeat(self):
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}
                ],
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_time(now()),
            },
        }
        ok, _, error = self.kubectl(
            "apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}",
            "-f", "-", stdin=json.dumps(lease),
        )
        if not ok:
            log(f"renewing lease kube-node-lease/{self.node} failed: {error}")
        # Reads the Ready condition first: if someone (the node lifecycle controller,
        # while this runner was away) changed it, its transition time is now.
        node, error = self.kubectl.json("get", "node", self.node)
        if node is None and not_found(error):
            log(f"node {self.node} was deleted: registering it again")
            self.ensure_node()
            return
        if node is None:
            log(f"reading node {self.node} failed: {error}")
            return
        ready = [c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True" or ready[0].get("reason") != "KubeletReady":
            self.ready_since = rfc3339(now())
        status = {"status": {"conditions": self.node_status()["conditions"]}}
        ok, _, error = self.kubectl(
            "patch", "node", self.node, "--subresource=status", "--type=strategic", "-p", json.dumps(status)
        )
        if not ok:
            log(f"refreshing the status of node {self.node} failed: {error}")

    def heartbeats(self):
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except Exception as error:  # noqa: BLE001 - the heartbeat must go on
                log(f"heartbeat failed: {error!r}")

    def wait_ready(self, timeout=120):
        """Until the node is Ready and the node lifecycle controller has lifted the
        not-ready taint the API server's TaintNodesByCondition admission put on it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node, _ = self.kubectl.json("get", "node", self.node)
            if node is not None:
                conditions = node.get("status", {}).get("conditions") or []
                ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
                taints = node["spec"].get("taints") or []
                blocked = [t["key"] for t in taints if t.get("key", "").startswith("node.kubernetes.io/")]
                if ready and not blocked:
                    return
            time.sleep(0.5)
        raise Failure(f"node {self.node} not Ready and schedulable after {timeout}s")

    # --- watching pods -------------------------------------------------------------

    def watch(self):
        """Streams the node's pods into the event queue; restarts kubectl when it stops."""
        selector = f"spec.nodeName={self.node}"
        while not self.stopping.is_set():
            errors = tempfile.TemporaryFile(mode="w+")
            command = [self.kubectl_binary, "--kubeconfig", self.options.kubeconfig, "get", "pods",
                       "--all-namespaces", "--field-selector", selector, "--watch",
                       "--output-watch-events", "-o", "json"]
            try:
                self.watcher = subprocess.Popen(
                    self.pdeathsig(command), stdout=subprocess.PIPE, stderr=errors,
                    stdin=subprocess.DEVNULL, text=True,
                )
            except OSError as error:
                log(f"kubectl watch did not start: {error}")
                self.stopping.wait(1)
                continue
            for line in self.watcher.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    log(f"unparsable watch event: {line[:200]!r}")
                    continue
                self.events.put(("watch", event))
            self.watcher.wait()
            if self.stopping.is_set():
                break
            errors.seek(0)
            log(f"pod watch ended ({self.watcher.returncode}): {errors.read().strip()[-500:]}; restarting")
            self.events.put(("relist", None))
            self.stopping.wait(1)

    def pdeathsig(self, command):
        # Dies with the thread that started it, even when this script is SIGKILLed.
        return [self.setpriv, "--pdeathsig", "KILL", "--"] + command if self.setpriv else command

    def apply_event(self, kind, event):
        if kind == "relist":
            self.next_relist = 0.0
            return
        if kind == "kill-jobs":
            runs = [run for run in self.runs.values() if run.namespace == event]
            for run in runs:
                run.kill()
            log(f"kill-jobs {event}: SIGKILLed {len(runs)} process(es)")
            return
        pod = event.get("object") or {}
        uid = pod.get("metadata", {}).get("uid")
        if event.get("type") == "ERROR" or not uid:
            log(f"watch error: {json.dumps(event)[:300]}")
            self.next_relist = 0.0
            return
        if event["type"] == "DELETED":
            self.forget(uid)
        else:
            self.pods[uid] = pod

    def forget(self, uid):
        self.pods.pop(uid, None)
        self.retry_at.pop(uid, None)
        self.complained.pop(uid, None)
        self.ignored.discard(uid)
        run = self.runs.get(uid)
        if run is not None and not run.pod_gone:
            log(f"pod {run.key} is gone: killing its process")
            run.pod_gone = True
            run.kill()
        self.reports.pop(uid, None)

    def relist(self):
        """A full list, in case the watch missed something while it restarted."""
        listed, error = self.kubectl.json("get", "pods", "--all-namespaces", "--field-selector",
                                          f"spec.nodeName={self.node}")
        if listed is None:
            log(f"listing pods failed: {error}")
            return
        version = listed.get("metadata", {}).get("resourceVersion", "")
        present = {}
        for pod in listed.get("items") or []:
            present[pod["metadata"]["uid"]] = pod
        for uid, pod in present.items():
            if uid not in self.pods or newer(pod, self.pods[uid]):
                self.pods[uid] = pod
        # A pod this runner knows but the list does not hold is gone, unless the watch
        # reported it after the list was taken.
        for uid in list(self.pods):
            if uid not in present and not newer(self.pods[uid], {"metadata": {"resourceVersion": version}}):
                self.forget(uid)

    # --- running pods --------------------------------------------------------------

    def reconcile(self):
        for uid, pod in list(self.pods.items()):
            if uid in self.runs or uid in self.finished:
                run = self.runs.get(uid)
                if run is not None and pod["metadata"].get("deletionTimestamp") and not run.deleting:
                    log(f"pod {run.key} is being deleted: killing its process")
                    run.deleting = True
                    run.kill()
                continue
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            phase = pod.get("status", {}).get("phase")
            if not job_owned(pod):
                if uid not in self.ignored:
                    self.ignored.add(uid)
                    log(f"pod {key} is not owned by a Job: left alone")
                continue
            if phase in ("Succeeded", "Failed"):
                self.finished.add(uid)
            elif phase == "Running":
                # Started by an earlier runner whose process died with it.
                log(f"pod {key} was Running without a process here: Failed")
                self.finished.add(uid)
                self.report_terminated(pod, 137, "ContainerStatusUnknown",
                                       "the job runner that ran this container stopped")
            elif pod["metadata"].get("deletionTimestamp"):
                log(f"pod {key} was deleted before it started: Failed")
                self.finished.add(uid)
                self.report_terminated(pod, 137, "ContainerStatusUnknown",
                                       "the pod was deleted before its container started")
            elif time.monotonic() >= self.retry_at.get(uid, 0.0):
                self.start(pod)

    def start(self, pod):
        meta, spec = pod["metadata"], pod["spec"]
        key, uid = f"{meta['namespace']}/{meta['name']}", meta["uid"]
        containers = spec.get("containers") or []
        if len(containers) != 1 or spec.get("initContainers"):
            self.refuse(pod, "the job runner runs pods of exactly one container and no init containers")
            return
        container = containers[0]
        env = {}
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = expand(variable["value"], env)
            elif "valueFrom" in variable:
                log(f"pod {key}: env {variable['name']} uses valueFrom, which the job runner does not resolve")
        argv = [expand(word, env) for word in (container.get("command") or []) + (container.get("args") or [])]
        if not container.get("command"):
            self.refuse(pod, "the job runner needs an explicit command (it knows no image entrypoints)")
            return
        program = os.path.basename(argv[0])
        if program == "keyward":
            executable = self.options.keyward
        elif program == "sh":
            executable = "/bin/sh"
        else:
            self.refuse(pod, f"the job runner runs only keyward (and sh), not {argv[0]!r}")
            return
        workdir = os.path.join(self.log_dir, f"{meta['namespace']}_{meta['name']}")
        os.makedirs(os.path.join(workdir, "home"), exist_ok=True)
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.path.join(workdir, "home"),
            "HOSTNAME": meta["name"],
        }
        token_path = None
        if automounts_token(pod):
            token_path = os.path.join(workdir, "token")
            error = self.write_token(pod, token_path)
            if error:
                # A kubelet keeps such a pod in ContainerCreating and tries again.
                if time.monotonic() - self.complained.get(uid, -60.0) >= 30:
                    log(f"pod {key}: no service account token yet ({error}); retrying every {START_RETRY_SECONDS}s")
                    self.complained[uid] = time.monotonic()
                self.retry_at[uid] = time.monotonic() + START_RETRY_SECONDS
                return
            base["KUBECONFIG"] = self.write_kubeconfig(workdir, token_path, meta["namespace"])
        base.update(env)
        log_path = workdir + ".log"
        chaos = self.chaos
        try:
            process = subprocess.Popen(
                self.pdeathsig([executable] + argv[1:]), cwd=workdir, env=base,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            self.refuse(pod, f"{executable} did not start: {error}")
            return
        log(f"pod {key} (job {job_name(pod)}): started {argv!r} as pid {process.pid}, "
            f"service account {spec.get('serviceAccountName', 'default')}; log {log_path}")
        reader = threading.Thread(target=copy_output, args=(process.stdout, log_path, key), daemon=True)
        reader.start()
        started = now()
        run = Run(pod, process, log_path, workdir, started, token_path, reader)
        self.runs[uid] = run
        self.tell_watchdog(str(process.pid))
        if self.chaos != chaos:
            run.kill()  # SIGUSR1 came while it was starting
        ip = f"10.244.{self.next_ip // 250}.{self.next_ip % 250 + 1}"
        self.next_ip += 1
        conditions = merge_conditions(pod, {
            "PodReadyToStartContainers": ("True", None),
            "Initialized": ("True", None),
            "Ready": ("True", None),
            "ContainersReady": ("True", None),
            "PodScheduled": ("True", None),
        })
        self.report(pod, {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": rfc3339(started),
            "containerStatuses": [{
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "containerID": f"job-runner://{process.pid}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": rfc3339(started)}},
            }],
        }, delete=False)

    def refuse(self, pod, message):
        """A container that cannot start: Failed at once, like a runtime's StartError."""
        log(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: {message}")
        self.finished.add(pod["metadata"]["uid"])
        self.report_terminated(pod, 128, "StartError", message)

    def write_token(self, pod, path):
        meta, spec = pod["metadata"], pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        ok, token, error = self.kubectl(
            "create", "token", account, "-n", meta["namespace"], "--bound-object-kind", "Pod",
            "--bound-object-name", meta["name"], "--bound-object-uid", meta["uid"],
            "--duration", f"{TOKEN_SECONDS}s",
        )
        if not ok or not token.strip():
            return error or "empty token"
        temporary = path + ".new"
        with open(temporary, "w") as file:
            file.write(token.strip())
        os.replace(temporary, path)
        return None

    def write_kubeconfig(self, workdir, token_path, namespace):
        cluster = {"server": self.server}
        if self.ca_data:
            cluster["certificate-authority-data"] = self.ca_data
        if self.insecure:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": "service-account", "user": {"tokenFile": token_path}}],
            "contexts": [{"name": "pod", "context": {"cluster": "cluster", "user": "service-account",
                                                     "namespace": namespace}}],
            "current-context": "pod",
        }
        path = os.path.join(workdir, "kubeconfig")
        with open(path, "w") as file:
            json.dump(config, file, indent=2)
        return path

    def renew_tokens(self):
        for run in self.runs.values():
            if run.token_path and time.monotonic() - run.token_time > TOKEN_SECONDS * 0.8:
                pod = self.pods.get(run.uid)
                if pod is None:
                    continue
                error = self.write_token(pod, run.token_path)
                if error:
                    log(f"pod {run.key}: renewing its token failed: {error}")
                else:
                    run.token_time = time.monotonic()

    def reap(self):
        for uid, run in list(self.runs.items()):
            returncode = run.exit_code()
            if returncode is None:
                continue
            run.kill()  # whatever it left behind, as a container's end takes all of it
            run.process.wait()
            self.tell_watchdog(f"-{run.process.pid}")
            del self.runs[uid]
            self.finished.add(uid)
            run.reader.join(timeout=2)
            code = returncode if returncode >= 0 else 128 - returncode
            log(f"pod {run.key}: exited with code {code}; log {run.log_path}")
            if run.pod_gone:
                continue
            pod = self.pods.get(uid)
            if pod is None:
                continue
            message = None
            if code != 0 and run.container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                message = log_tail(run.log_path)
            self.report_terminated(pod, code, "Completed" if code == 0 else "Error", message,
                                   started=run.started, container_id=f"job-runner://{run.process.pid}")

    def report_terminated(self, pod, code, reason, message, started=None, container_id=""):
        finished = rfc3339(now())
        started_at = rfc3339(started) if started else finished
        containers = pod["spec"].get("containers") or [{}]
        terminated = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": finished,
            "containerID": container_id,
        }
        if message:
            terminated["message"] = message
        statuses = [{
            "name": container.get("name", ""),
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": container_id,
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": dict(terminated, exitCode=code if index == 0 else 137)},
        } for index, container in enumerate(containers)]
        conditions = merge_conditions(pod, {
            "PodReadyToStartContainers": ("False", None),
            "Initialized": ("True", "PodCompleted"),
            "Ready": ("False", "PodCompleted"),
            "ContainersReady": ("False", "PodCompleted"),
            "PodScheduled": ("True", None),
        })
        status = pod.get("status") or {}
        self.report(pod, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": conditions,
            "hostIP": status.get("hostIP") or HOST_IP,
            "hostIPs": status.get("hostIPs") or [{"ip": HOST_IP}],
            "startTime": status.get("startTime") or started_at,
            "containerStatuses": statuses,
        }, delete=True)

    def report(self, pod, status, delete):
        """Queues a status write (replacing any unsent one) and tries it at once."""
        meta = pod["metadata"]
        self.reports[meta["uid"]] = [meta["namespace"], meta["name"], status, delete, 0, 0.0]
        self.send_reports()

    def send_reports(self):
        for uid, report in list(self.reports.items()):
            namespace, name, status, delete, attempts, next_try = report
            if time.monotonic() < next_try:
                continue
            # A JSON merge patch replaces the condition and container lists whole: they
            # are written complete.
            ok, _, error = self.kubectl(
                "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"metadata": {"uid": uid}, "status": status}),
            )
            gone = not_found(error) or "metadata.uid" in error  # recreated under its name
            if not ok and not gone and attempts < 300:
                report[4], report[5] = attempts + 1, time.monotonic() + 1
                log(f"pod {namespace}/{name}: status {status['phase']} not written ({error}); retrying")
                continue
            del self.reports[uid]
            if not ok:
                if not gone:
                    log(f"pod {namespace}/{name}: status {status['phase']} never written: {error}")
                continue
            log(f"pod {namespace}/{name}: {status['phase']}")
            pod = self.pods.get(uid)
            if delete and pod is not None and pod["metadata"].get("deletionTimestamp"):
                self.finish_deletion(namespace, name, uid)

    def finish_deletion(self, namespace, name, uid):
        """What a kubelet does once a deleted pod's containers are gone: deletes it with
        grace period 0 (finalizers, such as the Job controller's, still hold it)."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                   "preconditions": {"uid": uid}}
        ok, _, error = self.kubectl("delete", "--raw", f"/api/v1/namespaces/{namespace}/pods/{name}",
                                    "-f", "-", stdin=json.dumps(options))
        if not ok and not not_found(error):
            log(f"pod {namespace}/{name}: deleting it failed: {error}")

    def start_watchdog(self):
        """A helper that outlives this process by a moment: when its standard input (a
        pipe from here) closes, however this process ended, it SIGKILLs the process
        groups of the pods still running. A process killed by its parent's death signal
        would leave its own children behind."""
        self.watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--watchdog"],
            stdin=subprocess.PIPE, start_new_session=True, text=True,
        )

    def tell_watchdog(self, line):
        try:
            self.watchdog.stdin.write(line + "\n")
            self.watchdog.stdin.flush()
        except (OSError, ValueError) as error:
            log(f"the watchdog is gone ({error}): a SIGKILLed runner would leave processes behind")

    def kill_all(self):
        for run in list(self.runs.values()):
            run.kill()

    # --- the main loop -------------------------------------------------------------

    def serve(self):
        threading.Thread(target=self.watch, daemon=True).start()
        while True:
            try:
                kind, event = self.events.get(timeout=POLL_SECONDS)
                self.apply_event(kind, event)
                while True:
                    kind, event = self.events.get_nowait()
                    self.apply_event(kind, event)
            except queue.Empty:
                pass
            if self.chaos != self.chaos_logged:
                self.chaos_logged = self.chaos
                log(f"SIGUSR1: SIGKILLed {self.sigusr1} process(es)")
                self.sigusr1 = 0
            if time.monotonic() >= self.next_relist:
                self.relist()
                self.next_relist = time.monotonic() + RELIST_SECONDS
            self.reap()
            self.reconcile()
            self.send_reports()
            self.renew_tokens()

    def on_sigusr1(self, *_):
        # No locks here: the handler runs on the main thread between any two bytecodes.
        self.chaos += 1
        runs = list(self.runs.values())
        for run in runs:
            run.kill()
        self.sigusr1 += len(runs)


def newer(pod, other):
    try:
        return int(pod["metadata"]["resourceVersion"]) > int(other["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return False


def job_owned(pod):
    return job_name(pod) is not None


def job_name(pod):
    for owner in pod["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "Job" and owner.get("apiVersion", "").startswith("batch/") and owner.get("controller"):
            return owner.get("name")
    return None


def automounts_token(pod):
    """Whether the ServiceAccount admission plugin projected a token into the pod (it
    does unless the pod or its service account sets automountServiceAccountToken: false)."""
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in source:
                return True
    return False


VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined variables expand, $$ is a literal $, and
    anything else is left as written."""
    def substitute(match):
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return VARIABLE.sub(substitute, text)


def merge_conditions(pod, wanted):
    stamp = rfc3339(now())
    existing = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    result = []
    for kind, (status, reason) in wanted.items():
        condition = {"type": kind, "status": status, "lastProbeTime": None}
        previous = existing.pop(kind, None)
        same = previous is not None and previous.get("status") == status
        condition["lastTransitionTime"] = previous.get("lastTransitionTime", stamp) if same else stamp
        if reason:
            condition["reason"] = reason
        result.append(condition)
    # Conditions others wrote (DisruptionTarget, readiness gates) stay as they are.
    result.extend(existing.values())
    return result


def copy_output(stream, path, key):
    with open(path, "ab") as file:
        for line in iter(stream.readline, b""):
            file.write(line)
            file.flush()
            text = line.decode("utf-8", "replace").rstrip("\n")
            with OUTPUT_LOCK:
                sys.stderr.write(f"[{key}] {text}\n")
                sys.stderr.flush()
    stream.close()


def log_tail(path, lines=80, limit=2048):
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-limit:] or None


def watchdog():
    """--watchdog: SIGKILLs the process groups named on standard input (`PGID` adds one,
    `-PGID` drops one) once it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups = set()
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("-"):
            groups.discard(int(line[1:]))
        elif line:
            groups.add(int(line))
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass


def main():
    if sys.argv[1:] == ["--watchdog"]:
        watchdog()
        return
    parser = argparse.ArgumentParser(description="Run Job pods of the test control plane as local processes.")
    parser.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the control plane")
    parser.add_argument("--keyward", required=True, help="the keyward binary that `keyward` containers run")
    parser.add_argument("--node", default="keyward-job-runner", help="name of the node this runner plays")
    parser.add_argument("--log-dir", help="where process logs, tokens and kubeconfigs go "
                        "(default: a temporary directory, removed on exit unless KEYWARD_KEEP_CONTROL_PLANE=1)")
    parser.add_argument("--until-stdin-closes", action="store_true", help="exit when standard input closes")
    options = parser.parse_args()
    options.kubeconfig = os.path.abspath(options.kubeconfig)
    options.keyward = os.path.abspath(options.keyward)
    if not os.access(options.keyward, os.X_OK):
        sys.exit(f"job-runner: {options.keyward} is not an executable")

    if options.log_dir:
        log_dir, remove_logs = os.path.abspath(options.log_dir), False
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
    else:
        log_dir = tempfile.mkdtemp(prefix="keyward-job-runner-")
        remove_logs = os.environ.get("KEYWARD_KEEP_CONTROL_PLANE") != "1"
    runner = Runner(options, find_kubectl(), log_dir)
    runner.start_watchdog()

    def stop(signum, _frame):
        if not runner.stopping.is_set():
            runner.stopping.set()
            raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, runner.on_sigusr1)
    if options.until_stdin_closes:
        def until_stdin_closes():
            # Lines on standard input are commands: `kill-jobs NAMESPACE` SIGKILLs the
            # processes of that namespace's pods, as SIGUSR1 does for every pod.
            for line in sys.stdin:
                words = line.split()
                if len(words) == 2 and words[0] == "kill-jobs":
                    runner.events.put(("kill-jobs", words[1]))
                elif words:
                    log(f"unknown command on standard input: {line.strip()!r}")
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=until_stdin_closes, daemon=True).start()

    reason, status = "finished", 0
    try:
        log(f"logs in {log_dir}")
        runner.read_kubeconfig()
        runner.wait_for_other_runner()
        runner.ensure_node()
        threading.Thread(target=runner.heartbeats, daemon=True).start()
        runner.wait_ready()
        print("job-runner ready", flush=True)
        log(f"node {options.node} is Ready")
        runner.serve()
    except Shutdown as signal_name:
        reason = str(signal_name)
    except Failure as failure:
        reason, status = f"failed: {failure}", 1
    finally:
        runner.stopping.set()
        runner.kill_all()
        if runner.watcher is not None:
            runner.watcher.kill()
        for run in list(runner.runs.values()):
            run.process.wait()
        runner.watchdog.stdin.close()
        runner.watchdog.wait()
        if remove_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        log(f"stopped ({reason})")
    sys.exit(status)


if __name__ == "__main__":
    main()
