#!/usr/bin/env python3
"""Check tally's own invariants on rendered Kubernetes manifests.

Schemas (kubernetes-validate) say the manifests are well-formed; this says
they are right for tally. Every failure is one line naming the object; the
exit status is 1 when there is any.

- every Deployment container has a liveness probe on /healthz and a readiness
  probe on /readyz, on the port the binary listens on (BIND_ADDR/HEALTH_ADDR);
- every container (Deployments, Jobs, CronJobs) has CPU and memory requests
  and limits, runs as non-root with a read-only root filesystem, no privilege
  escalation and all capabilities dropped, under the RuntimeDefault seccomp
  profile;
- terminationGracePeriodSeconds of every Deployment is at least
  SHUTDOWN_TIMEOUT_SECS (from its ConfigMap or env) + its preStop pause +
  FLUSH_MARGIN_SECS for the telemetry flush after the drain;
- the CronJob calls the gateway Service by name on the Service's port with the
  path /api/cron/update-stats, fails on a non-2xx answer, sends the Bearer
  secret from the same Secret key the gateway reads, is Forbid-concurrent
  with a starting deadline; the Service routes to the gateway's BIND_ADDR port;
- every KEDA ScaledObject targets a worker and has one Redis list trigger per
  ready list of that worker's queue, of every partition its QUEUE_PARTITIONS
  declares (1 when unset) and no other,
  <TALLY_QUEUE_PREFIX>:{<queue>}:ready:<high|normal|low> (partition p >= 1:
  {<queue>#p}) with the prefix from
  the ConfigMap; the triggers are all `redis` or all `redis-cluster`, with
  only the metadata keys KEDA reads for that type and a Redis address, and
  when the Secret is rendered, `redis-cluster` exactly when REDIS_URL is a
  cluster URL (`redis+cluster://`, `rediss+cluster://`); an authenticationRef
  names a rendered TriggerAuthentication whose Secret keys exist;
  stats-worker has exactly one autoscaler (HPA or KEDA);
- images are the tally binaries (or the allowed curl image for the CronJob)
  and match the workload; env names are the ones the binaries read, and the
  required ones are present; referenced ConfigMaps exist, and Secret keys too
  when the Secret is rendered;
- every Deployment has a PodDisruptionBudget and the gateway a NetworkPolicy
  admitting only the CronJob's pods and the monitoring namespace, and one
  limiting its egress to listed ports that include DNS, the Redis port (every
  seed node's port for a cluster URL) and the OTLP endpoint's port, and not
  PostgreSQL's (5432, or DATABASE_URL's
  port when the Secret is rendered);
- the operator console runs one replica (its sessions are per process), reads
  ADMIN_TOKEN (and ADMIN_READ_TOKEN) from a Secret no other workload reads,
  has a Service on its ADMIN_BIND_ADDR port, and a NetworkPolicy admitting
  only the monitoring namespace and pods of other namespaces (an ingress
  controller), never tally's own pods nor every pod of a namespace.

Usage: check_k8s_invariants.py RENDERED.yaml [...]
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

# The binaries, and the environment each one reads (docs/CONTRACTS.md and
# the service contracts). Anything else in a container's env is a typo.
COMMON_ENV = {
    "REDIS_URL",
    "RUST_LOG",
    "LOG_FORMAT",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "TALLY_QUEUE_PREFIX",
}
WORKER_ENV = COMMON_ENV | {
    "DATABASE_URL",
    "WORKER_CONCURRENCY",
    "HEALTH_ADDR",
    "SHUTDOWN_TIMEOUT_SECS",
    "LEASE_SECS",
    "DATABASE_POOL_SIZE",
    "OUTBOX_RELAY",
    "OUTBOX_BATCH",
    "QUEUE_PARTITIONS",
    "OUTBOX_POLL_SECS",
}
# No DATABASE_URL: the gateway needs Redis only (the repair it asks for runs
# in scoring-worker), so a manifest that still passes it fails here.
GATEWAY_ENV = COMMON_ENV | {
    "CRON_SECRET",
    "BIND_ADDR",
    "SHUTDOWN_TIMEOUT_SECS",
    "MAX_BODY_BYTES",
    "REPAIR_ENABLED",
    "REPAIR_GRACE_SECS",
    "REPAIR_BATCH",
}
CONSOLE_ENV = COMMON_ENV | {
    "ADMIN_TOKEN",
    "ADMIN_READ_TOKEN",
    "ADMIN_BIND_ADDR",
    "ADMIN_PUBLIC_ORIGIN",
    "ADMIN_SESSION_HOURS",
    "ADMIN_SAMPLE_SECS",
    "SHUTDOWN_TIMEOUT_SECS",
}
CLI_ENV = COMMON_ENV | {"DATABASE_URL"}

BINARIES = {
    "cron-gateway": {"env": GATEWAY_ENV, "required": {"REDIS_URL", "CRON_SECRET"}, "addr": ("BIND_ADDR", 8080), "shutdown": 10},
    "scoring-worker": {"env": WORKER_ENV, "required": {"REDIS_URL", "DATABASE_URL"}, "addr": ("HEALTH_ADDR", 9090), "shutdown": 25},
    "stats-worker": {"env": WORKER_ENV, "required": {"REDIS_URL", "DATABASE_URL"}, "addr": ("HEALTH_ADDR", 9090), "shutdown": 25},
    "admin-console": {"env": CONSOLE_ENV, "required": {"REDIS_URL", "ADMIN_TOKEN"}, "addr": ("ADMIN_BIND_ADDR", 8081), "shutdown": 10},
    "tally": {"env": CLI_ENV, "required": {"DATABASE_URL"}, "addr": None, "shutdown": None},
}

# Images that are not ours, with the env names they may see.
EXTERNAL_IMAGES = {"curlimages/curl": {"CRON_SECRET"}}

GATEWAY = "cron-gateway"
CONSOLE = "admin-console"
# The console's tokens: from a Secret, and one that no other workload reads.
CONSOLE_TOKENS = ("ADMIN_TOKEN", "ADMIN_READ_TOKEN")
CRON_PATH = "/api/cron/update-stats"
STATS_WORKER = "stats-worker"
# The queue each worker consumes (scoring_worker::QUEUE, stats_worker::QUEUE):
# an autoscaler of a worker reads that queue's ready lists.
WORKER_QUEUES = {"scoring-worker": "scoring", "stats-worker": "stats"}
PRIORITIES = ("high", "normal", "low")
# KEDA's Redis list scalers (pkg/scalers/redis_scaler.go): `redis` for one
# server, `redis-cluster` for a Redis Cluster, and the trigger metadata keys
# each reads. Anything else is ignored by KEDA: a typo, or a key of the other
# type (`address` on a redis-cluster trigger), would go unnoticed.
KEDA_REDIS_COMMON_KEYS = {
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "username",
    "usernameFromEnv",
    "passwordFromEnv",
    "enableTLS",
    "unsafeSsl",
}
KEDA_REDIS_TRIGGERS = {
    "redis": KEDA_REDIS_COMMON_KEYS | {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv"},
    "redis-cluster": KEDA_REDIS_COMMON_KEYS | {"addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv"},
}
# What a TriggerAuthentication may hand those scalers.
KEDA_REDIS_AUTH_PARAMS = {"address", "addresses", "host", "hosts", "port", "ports", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
DEFAULT_PREFIX = "tally"
# Telemetry flush after the drain: OpenTelemetry (3 s) + Sentry (2 s).
FLUSH_MARGIN_SECS = 5
MONITORING_NAMESPACE = "monitoring"
PROBES = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
SCALEDOBJECT_SPEC_KEYS = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "fallback",
    "advanced",
    "triggers",
    "initialCooldownPeriod",
}


@dataclass
class Report:
    """Collected failures and a count of what was checked."""

    failures: list[str] = field(default_factory=list)
    checked: int = 0

    def check(self, ok: bool, where: str, message: str) -> bool:
        self.checked += 1
        if not ok:
            self.failures.append(f"{where}: {message}")
        return ok


def name_of(obj: dict) -> str:
    return obj.get("metadata", {}).get("name", "?")


def label(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{name_of(obj)}"


def pod_template(obj: dict) -> dict:
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
    return spec.get("template", {})


def image_repository(image: str) -> str:
    """`registry/tally/cron-gateway:1@sha256:…` -> `registry/tally/cron-gateway`."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image.rsplit(":", 1)[0]
    return image


def binary_of(image: str) -> str | None:
    base = image_repository(image).rsplit("/", 1)[-1]
    return base if base in BINARIES else None


def external_of(image: str) -> str | None:
    repository = image_repository(image)
    for allowed in EXTERNAL_IMAGES:
        if repository == allowed or repository.endswith("/" + allowed):
            return allowed
    return None


def port_of(addr: str) -> int | None:
    match = re.fullmatch(r".*:(\d+)", addr.strip())
    return int(match.group(1)) if match else None


class Manifests:
    """The rendered objects, indexed."""

    def __init__(self, objects: list[dict]):
        self.objects = [obj for obj in objects if isinstance(obj, dict)]

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((obj for obj in self.of_kind(kind) if name_of(obj) == name), None)

    def configmap_data(self, name: str) -> dict | None:
        obj = self.get("ConfigMap", name)
        return None if obj is None else {k: str(v) for k, v in (obj.get("data") or {}).items()}

    def secret_keys(self, name: str) -> set[str] | None:
        obj = self.get("Secret", name)
        if obj is None:
            return None
        return set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys())

    def prefix(self) -> str:
        data = self.configmap_data("tally-common") or {}
        return data.get("TALLY_QUEUE_PREFIX", DEFAULT_PREFIX) or DEFAULT_PREFIX


def resolve_env(container: dict, manifests: Manifests, report: Report, where: str) -> dict[str, str | None]:
    """Env names a container gets, with literal values where known (None for secrets)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            data = manifests.configmap_data(ref)
            if report.check(data is not None or source["configMapRef"].get("optional", False), where, f"envFrom ConfigMap {ref!r} is not in the manifests"):
                env.update(data or {})
        if "secretRef" in source:
            ref = source["secretRef"]["name"]
            keys = manifests.secret_keys(ref)
            report.check(keys is not None, where, f"envFrom Secret {ref!r} must be rendered so its keys can be checked; use secretKeyRef")
            env.update({key: None for key in keys or ()})
    for item in container.get("env") or []:
        name = item.get("name")
        value_from = item.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            keys = manifests.secret_keys(ref["name"])
            if keys is not None and not ref.get("optional", False):
                report.check(ref["key"] in keys, where, f"env {name} reads key {ref['key']!r} missing from Secret {ref['name']!r}")
            env[name] = None
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            data = manifests.configmap_data(ref["name"]) or {}
            report.check(ref["key"] in data or ref.get("optional", False), where, f"env {name} reads missing ConfigMap key {ref['name']}/{ref['key']}")
            env[name] = data.get(ref["key"])
        else:
            env[name] = None if "valueFrom" in item else str(item.get("value", ""))
    return env


def check_security(pod_spec: dict, container: dict, report: Report, where: str) -> None:
    pod_ctx = pod_spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    run_as_non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    report.check(run_as_non_root is True, where, "securityContext.runAsNonRoot must be true")
    run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    report.check(run_as_user is None or run_as_user != 0, where, "runAsUser must not be 0")
    report.check(ctx.get("allowPrivilegeEscalation") is False, where, "securityContext.allowPrivilegeEscalation must be false")
    report.check(ctx.get("readOnlyRootFilesystem") is True, where, "securityContext.readOnlyRootFilesystem must be true")
    drop = (ctx.get("capabilities") or {}).get("drop") or []
    report.check("ALL" in drop, where, "securityContext.capabilities.drop must contain ALL")
    report.check(not (ctx.get("capabilities") or {}).get("add"), where, "no capabilities may be added")
    report.check(ctx.get("privileged") is not True, where, "must not be privileged")
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    report.check(seccomp in ("RuntimeDefault", "Localhost"), where, "seccompProfile must be RuntimeDefault")


def check_resources(container: dict, report: Report, where: str) -> None:
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            report.check(resource in (resources.get(kind) or {}), where, f"resources.{kind}.{resource} is missing")


def container_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return item.get("containerPort")
    return None


def check_probes(container: dict, listen_port: int | None, report: Report, where: str) -> None:
    for probe, path in PROBES.items():
        spec = container.get(probe)
        if not report.check(spec is not None, where, f"{probe} is missing"):
            continue
        http = spec.get("httpGet")
        if not report.check(http is not None, where, f"{probe} must be an httpGet on {path}"):
            continue
        report.check(http.get("path") == path, where, f"{probe} path is {http.get('path')!r}, expected {path!r}")
        port = container_port(container, http.get("port"))
        report.check(port is not None, where, f"{probe} port {http.get('port')!r} is not a declared container port")
        if listen_port is not None and port is not None:
            report.check(port == listen_port, where, f"{probe} probes port {port} but the binary listens on {listen_port}")


def shutdown_secs(env: dict[str, str | None], default: int, report: Report, where: str) -> int:
    raw = env.get("SHUTDOWN_TIMEOUT_SECS")
    if raw is None:
        return default
    if not report.check(raw.isdigit(), where, f"SHUTDOWN_TIMEOUT_SECS={raw!r} is not a whole number of seconds"):
        return default
    return int(raw)


def prestop_secs(container: dict) -> int:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    return int((pre_stop.get("sleep") or {}).get("seconds", 0))


def check_workload(obj: dict, manifests: Manifests, report: Report) -> dict[str, dict]:
    """Checks shared by all workloads; returns per-container facts for later checks."""
    template = pod_template(obj)
    pod_spec = template.get("spec") or {}
    facts = {}
    report.check(pod_spec.get("automountServiceAccountToken") is False, label(obj), "automountServiceAccountToken must be false (tally never calls the API)")
    report.check(not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID"), label(obj), "must not use host namespaces")
    for container in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or []):
        where = f"{label(obj)} container {container.get('name')}"
        image = container.get("image", "")
        binary = binary_of(image)
        external = external_of(image)
        report.check(binary is not None or external is not None, where, f"image {image!r} is not a tally binary ({', '.join(sorted(BINARIES))}) nor an allowed image ({', '.join(EXTERNAL_IMAGES)})")
        report.check(":" in image.rsplit("/", 1)[-1] or "@" in image or binary is not None, where, f"external image {image!r} must be pinned to a tag or digest")
        check_resources(container, report, where)
        check_security(pod_spec, container, report, where)
        env = resolve_env(container, manifests, report, where)
        allowed = BINARIES[binary]["env"] if binary else EXTERNAL_IMAGES.get(external or "", set())
        for name in sorted(env):
            report.check(name in allowed, where, f"env {name} is not read by {binary or external}")
        if binary:
            for name in sorted(BINARIES[binary]["required"] - set(env)):
                report.failures.append(f"{where}: required env {name} is missing")
        facts[container.get("name")] = {"container": container, "binary": binary, "env": env, "pod_spec": pod_spec}
    return facts


def check_deployment(obj: dict, manifests: Manifests, report: Report) -> None:
    facts = check_workload(obj, manifests, report)
    name = name_of(obj)
    pod_spec = pod_template(obj).get("spec") or {}
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    for container_name, fact in facts.items():
        where = f"{label(obj)} container {container_name}"
        binary = fact["binary"]
        container = fact["container"]
        report.check(binary == name, where, f"Deployment {name!r} runs image of {binary!r}; they must match")
        if binary is None or BINARIES[binary]["addr"] is None:
            report.failures.append(f"{where}: a Deployment must run a service binary, not {binary!r}")
            continue
        addr_var, default_port = BINARIES[binary]["addr"]
        addr = fact["env"].get(addr_var)
        listen_port = port_of(addr) if addr else default_port
        report.check(listen_port is not None, where, f"{addr_var}={addr!r} has no port")
        check_probes(container, listen_port, report, where)
        shutdown = shutdown_secs(fact["env"], BINARIES[binary]["shutdown"], report, where)
        pause = prestop_secs(container)
        needed = shutdown + pause + FLUSH_MARGIN_SECS
        report.check(
            grace >= needed,
            label(obj),
            f"terminationGracePeriodSeconds={grace} is too short: SHUTDOWN_TIMEOUT_SECS={shutdown} + preStop {pause} s + flush {FLUSH_MARGIN_SECS} s = {needed}",
        )
    # Every Deployment has a PDB selecting its pods.
    labels = pod_template(obj).get("metadata", {}).get("labels", {})
    pdbs = [pdb for pdb in manifests.of_kind("PodDisruptionBudget") if selects(pdb.get("spec", {}).get("selector"), labels)]
    report.check(len(pdbs) >= 1, label(obj), "no PodDisruptionBudget selects its pods")
    report.check(obj.get("spec", {}).get("selector") is not None and selects(obj["spec"]["selector"], labels), label(obj), "selector does not match the pod template labels")


def selects(selector: dict | None, labels: dict) -> bool:
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return bool(match_labels or selector.get("matchExpressions"))


def policies_for(manifests: Manifests, labels: dict, direction: str) -> list[dict]:
    """The NetworkPolicies that select pods with `labels` and restrict
    `direction` ("Ingress" or "Egress"); a policy without `policyTypes`
    counts as an ingress policy."""
    default = ["Ingress"] if direction == "Ingress" else []
    return [
        p
        for p in manifests.of_kind("NetworkPolicy")
        if selects(p.get("spec", {}).get("podSelector"), labels) and direction in (p.get("spec", {}).get("policyTypes") or default)
    ]


def check_gateway_service(manifests: Manifests, report: Report) -> tuple[dict | None, int | None]:
    """The gateway Service routes to the gateway's listening port; returns (service, service port)."""
    deployment = manifests.get("Deployment", GATEWAY)
    service = manifests.get("Service", GATEWAY)
    if not report.check(deployment is not None, "Deployment/" + GATEWAY, "missing"):
        return None, None
    if not report.check(service is not None, "Service/" + GATEWAY, "missing"):
        return None, None
    labels = pod_template(deployment).get("metadata", {}).get("labels", {})
    report.check(selects({"matchLabels": service.get("spec", {}).get("selector") or {}}, labels), label(service), "selector does not select the gateway pods")
    ports = service.get("spec", {}).get("ports") or []
    if not report.check(len(ports) == 1, label(service), "expected exactly one port"):
        return service, None
    container = (pod_template(deployment).get("spec", {}).get("containers") or [{}])[0]
    target = container_port(container, ports[0].get("targetPort", ports[0].get("port")))
    env = resolve_env(container, manifests, Report(), "")
    bind = env.get("BIND_ADDR")
    listen = port_of(bind) if bind else BINARIES[GATEWAY]["addr"][1]
    report.check(target == listen, label(service), f"targetPort resolves to {target}, but BIND_ADDR listens on {listen}")
    return service, ports[0].get("port")


def check_cronjob(manifests: Manifests, report: Report) -> None:
    cronjobs = manifests.of_kind("CronJob")
    if not report.check(len(cronjobs) == 1, "CronJob", f"expected exactly one CronJob, found {len(cronjobs)}"):
        return
    cron = cronjobs[0]
    where = label(cron)
    spec = cron.get("spec", {})
    report.check(spec.get("concurrencyPolicy") == "Forbid", where, "concurrencyPolicy must be Forbid")
    report.check(isinstance(spec.get("startingDeadlineSeconds"), int), where, "startingDeadlineSeconds must be set")
    check_workload(cron, manifests, report)
    containers = pod_template(cron).get("spec", {}).get("containers") or []
    if not report.check(len(containers) == 1, where, "expected one container"):
        return
    container = containers[0]
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    report.check(any(a in ("--fail", "-f", "--fail-with-body") for a in argv), where, "curl must fail on a non-2xx answer (--fail or --fail-with-body)")
    urls = [a for a in argv if a.startswith(("http://", "https://"))]
    if not report.check(len(urls) == 1, where, f"expected one URL in the command, found {urls}"):
        return
    url = urlsplit(urls[0])
    report.check(url.path == CRON_PATH, where, f"calls path {url.path!r}, the gateway serves {CRON_PATH!r}")
    service, service_port = check_gateway_service(manifests, report)
    namespace = cron.get("metadata", {}).get("namespace")
    hosts = {GATEWAY, f"{GATEWAY}.{namespace}", f"{GATEWAY}.{namespace}.svc", f"{GATEWAY}.{namespace}.svc.cluster.local"}
    report.check(url.hostname in hosts, where, f"calls host {url.hostname!r}, expected the Service {GATEWAY!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    if service is not None:
        report.check(port == service_port, where, f"calls port {port}, the Service listens on {service_port}")
    header = [a for a in argv if a.lower().startswith("authorization:")]
    report.check(header == ["Authorization: Bearer $(CRON_SECRET)"], where, "must send 'Authorization: Bearer $(CRON_SECRET)'")
    # The CronJob's CRON_SECRET comes from the same Secret key as the gateway's.
    gateway = manifests.get("Deployment", GATEWAY)
    if gateway is not None:
        def secret_ref(c: dict):
            for item in c.get("env") or []:
                if item.get("name") == "CRON_SECRET":
                    ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
                    return ref.get("name"), ref.get("key")
            return None

        gateway_container = (pod_template(gateway).get("spec", {}).get("containers") or [{}])[0]
        cron_ref = secret_ref(container)
        report.check(cron_ref is not None and cron_ref[0] is not None, where, "CRON_SECRET must come from a secretKeyRef")
        report.check(cron_ref == secret_ref(gateway_container), where, f"CRON_SECRET comes from {cron_ref}, the gateway reads {secret_ref(gateway_container)}")


def check_network_policy(manifests: Manifests, report: Report) -> None:
    gateway = manifests.get("Deployment", GATEWAY)
    cronjobs = manifests.of_kind("CronJob")
    if gateway is None or not cronjobs:
        return
    gateway_labels = pod_template(gateway).get("metadata", {}).get("labels", {})
    cron_labels = pod_template(cronjobs[0]).get("metadata", {}).get("labels", {})
    namespace = gateway.get("metadata", {}).get("namespace")
    policies = policies_for(manifests, gateway_labels, "Ingress")
    if not report.check(len(policies) >= 1, "NetworkPolicy", "no policy restricts ingress to the gateway"):
        return
    cron_allowed = False
    for policy in policies:
        for rule in policy.get("spec", {}).get("ingress") or []:
            peers = rule.get("from")
            if not report.check(bool(peers), label(policy), "an ingress rule without `from` admits every pod"):
                continue
            for peer in peers:
                pod_sel = peer.get("podSelector")
                ns_sel = peer.get("namespaceSelector")
                if "ipBlock" in peer:
                    report.failures.append(f"{label(policy)}: ipBlock peers are not allowed to reach the gateway")
                elif ns_sel is not None and pod_sel is None:
                    ns = (ns_sel.get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                    report.check(ns == MONITORING_NAMESPACE, label(policy), f"namespace peer {ns_sel} is not the {MONITORING_NAMESPACE!r} namespace")
                elif pod_sel is not None and ns_sel is None:
                    ok = selects(pod_sel, cron_labels)
                    report.check(ok and not selects(pod_sel, gateway_labels), label(policy), f"pod peer {pod_sel} is not (only) the CronJob's pods")
                    cron_allowed |= ok and policy.get("metadata", {}).get("namespace") == namespace
                else:
                    report.failures.append(f"{label(policy)}: peer {peer} is neither the CronJob's pods nor the monitoring namespace")
    report.check(cron_allowed, "NetworkPolicy", "no policy admits the CronJob's pods to the gateway")


def secret_refs(container: dict) -> dict[str, set[str]]:
    """Secret name -> env names a container reads from it (`*` for envFrom)."""
    refs: dict[str, set[str]] = {}
    for item in container.get("env") or []:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs.setdefault(ref.get("name"), set()).add(item.get("name"))
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            refs.setdefault(source["secretRef"].get("name"), set()).add("*")
    return refs


def check_console(manifests: Manifests, report: Report) -> None:
    console = manifests.get("Deployment", CONSOLE)
    if not report.check(console is not None, "Deployment/" + CONSOLE, "missing"):
        return
    where = label(console)
    report.check(console.get("spec", {}).get("replicas", 1) == 1, where, "replicas must be 1: browser sessions are signed with a per-process key")
    template = pod_template(console)
    labels = template.get("metadata", {}).get("labels", {})
    namespace = console.get("metadata", {}).get("namespace")
    containers = template.get("spec", {}).get("containers") or []
    token_secrets: set[str] = set()
    for container in containers:
        refs = secret_refs(container)
        for token in CONSOLE_TOKENS:
            from_secret = [name for name, keys in refs.items() if token in keys]
            from_elsewhere = any(item.get("name") == token and not (item.get("valueFrom") or {}).get("secretKeyRef") for item in container.get("env") or [])
            if token == "ADMIN_TOKEN" or from_secret or from_elsewhere:
                report.check(bool(from_secret) and not from_elsewhere, where, f"{token} must come from a secretKeyRef, never a ConfigMap or a literal")
            token_secrets.update(from_secret)
        for source in container.get("envFrom") or []:
            data = manifests.configmap_data((source.get("configMapRef") or {}).get("name", "")) or {}
            for token in CONSOLE_TOKENS:
                report.check(token not in data, where, f"{token} is in a ConfigMap; it must come from a Secret")
    for obj in manifests.objects:
        if obj is console or obj.get("kind") not in ("Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet"):
            continue
        for container in pod_template(obj).get("spec", {}).get("containers") or []:
            for name in secret_refs(container):
                report.check(name not in token_secrets, label(obj), f"reads Secret {name!r}, which holds the console's tokens; give the console a Secret of its own")
    # The Service routes to the console's port; the gateway's does not select it.
    service = manifests.get("Service", CONSOLE)
    if report.check(service is not None, "Service/" + CONSOLE, "missing"):
        report.check(selects({"matchLabels": service.get("spec", {}).get("selector") or {}}, labels), label(service), "selector does not select the console pods")
        ports = service.get("spec", {}).get("ports") or []
        container = containers[0] if containers else {}
        env = resolve_env(container, manifests, Report(), "")
        bind = env.get("ADMIN_BIND_ADDR")
        listen = port_of(bind) if bind else BINARIES[CONSOLE]["addr"][1]
        targets = {container_port(container, p.get("targetPort", p.get("port"))) for p in ports}
        report.check(targets == {listen}, label(service), f"targetPort resolves to {sorted(t for t in targets if t)}, but ADMIN_BIND_ADDR listens on {listen}")
    gateway_service = manifests.get("Service", GATEWAY)
    if gateway_service is not None:
        report.check(not selects({"matchLabels": gateway_service.get("spec", {}).get("selector") or {}}, labels), label(gateway_service), "selects the console's pods: the console is never behind the gateway")
    policies = policies_for(manifests, labels, "Ingress")
    if not report.check(len(policies) >= 1, "NetworkPolicy", "no policy restricts ingress to the console"):
        return
    for policy in policies:
        for rule in policy.get("spec", {}).get("ingress") or []:
            peers = rule.get("from")
            if not report.check(bool(peers), label(policy), "an ingress rule without `from` admits every pod"):
                continue
            for peer in peers:
                pod_sel = peer.get("podSelector")
                ns_sel = peer.get("namespaceSelector")
                ns = ((ns_sel or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                if "ipBlock" in peer:
                    report.failures.append(f"{label(policy)}: ipBlock peers are not allowed to reach the console")
                elif ns_sel is not None and pod_sel is None:
                    report.check(ns == MONITORING_NAMESPACE, label(policy), f"namespace peer {ns_sel} admits every pod of a namespace other than {MONITORING_NAMESPACE!r}")
                elif ns_sel is not None and pod_sel is not None:
                    report.check(bool(ns) and ns != namespace, label(policy), f"peer {peer} must name another namespace (the ingress controller's)")
                    report.check(bool(pod_sel.get("matchLabels") or pod_sel.get("matchExpressions")), label(policy), f"peer {peer} admits every pod of its namespace")
                else:
                    report.failures.append(f"{label(policy)}: peer {peer} admits pods of tally's own namespace; only the ingress controller and monitoring may reach the console")


def url_port(url: str | None, default: int) -> int:
    """The port of `scheme://host:port/...`, `default` when it names none."""
    if not url:
        return default
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default


def is_cluster_url(url: str) -> bool:
    """Whether the services open a Redis Cluster connection for this REDIS_URL."""
    return url.startswith(CLUSTER_SCHEMES)


def redis_ports(url: str | None) -> list[int]:
    """The ports a REDIS_URL names: one for a server, every seed node's for a
    cluster (`redis+cluster://[auth@]h1:p1,h2:p2[/]`, split as the client does);
    6379 where none is given."""
    if not url or not is_cluster_url(url):
        return [url_port(url, 6379)]
    rest = url.split("://", 1)[1].split("/", 1)[0]
    hosts = rest.rsplit("@", 1)[-1]
    ports = []
    for host in (h.strip() for h in hosts.split(",")):
        if host:
            ports.append(url_port(f"redis://{host}", 6379))
    return ports or [6379]


def host_port_list(value: str) -> list[tuple[str, str]]:
    """`a:1, b:2` -> [("a", "1"), ("b", "2")], trimmed as KEDA does."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        if item:
            host, _, port = item.rpartition(":")
            pairs.append((host, port))
    return pairs


def secret_value(manifests: Manifests, name: str, key: str) -> str | None:
    """A literal value of a rendered Secret (stringData only: data is base64)."""
    obj = manifests.get("Secret", name)
    return None if obj is None else (obj.get("stringData") or {}).get(key)


def check_redis_only_egress(manifests: Manifests, report: Report, name: str) -> None:
    """A Redis-only workload (the gateway, the console) reaches Redis, DNS
    and its telemetry, never PostgreSQL."""
    deployment = manifests.get("Deployment", name)
    if deployment is None:
        return
    pod_labels = pod_template(deployment).get("metadata", {}).get("labels", {})
    policies = policies_for(manifests, pod_labels, "Egress")
    if not report.check(len(policies) >= 1, "NetworkPolicy", f"no policy limits the egress of {name} (it needs Redis, DNS and telemetry only)"):
        return
    allowed: set[tuple[str, int]] = set()
    for policy in policies:
        for rule in policy.get("spec", {}).get("egress") or []:
            ports = rule.get("ports")
            if not report.check(bool(ports), label(policy), "an egress rule without `ports` admits every port, PostgreSQL's too"):
                continue
            for port in ports:
                number = port.get("port")
                if not report.check(isinstance(number, int) and "endPort" not in port, label(policy), f"egress port {port} must be one numbered port"):
                    continue
                allowed.add((port.get("protocol", "TCP"), number))
    common = manifests.configmap_data("tally-common") or {}
    needed = {("UDP", 53): "DNS"}
    for port in redis_ports(secret_value(manifests, "tally-secrets", "REDIS_URL")):
        needed[("TCP", port)] = "Redis (REDIS_URL)"
    otlp = common.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if otlp:
        needed[("TCP", url_port(otlp, 4318))] = "the OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)"
    for key, what in needed.items():
        report.check(key in allowed, "NetworkPolicy", f"the egress of {name} does not admit {what} on {key[1]}/{key[0]}")
    postgres = url_port(secret_value(manifests, "tally-secrets", "DATABASE_URL"), 5432)
    report.check(("TCP", postgres) not in allowed, "NetworkPolicy", f"the egress of {name} admits PostgreSQL's port {postgres}; it needs Redis only")


def check_autoscaling(manifests: Manifests, report: Report) -> None:
    hpas = [h for h in manifests.of_kind("HorizontalPodAutoscaler") if h.get("spec", {}).get("scaleTargetRef", {}).get("name") == STATS_WORKER]
    scaled_objects = manifests.of_kind("ScaledObject")
    scaled = [s for s in scaled_objects if s.get("spec", {}).get("scaleTargetRef", {}).get("name") == STATS_WORKER]
    report.check(len(hpas) + len(scaled) == 1, STATS_WORKER, f"needs exactly one autoscaler (HPA or KEDA ScaledObject), found {len(hpas)} HPA and {len(scaled)} ScaledObject")
    for hpa in hpas:
        spec = hpa.get("spec", {})
        report.check(spec.get("minReplicas", 1) >= 1, label(hpa), "minReplicas must be at least 1")
    targets = {h.get("spec", {}).get("scaleTargetRef", {}).get("name") for h in manifests.of_kind("HorizontalPodAutoscaler")}
    targets |= {s.get("spec", {}).get("scaleTargetRef", {}).get("name") for s in scaled_objects}
    for name in sorted(t for t in targets if t):
        deployment = manifests.get("Deployment", name)
        if deployment is not None:
            report.check("replicas" not in deployment.get("spec", {}), label(deployment), "must not set replicas: its autoscaler owns the count")
    prefix = manifests.prefix()
    redis_url = secret_value(manifests, "tally-secrets", "REDIS_URL")
    for obj in scaled_objects:
        check_scaled_object(obj, manifests, prefix, redis_url, report)


def check_scaled_object(obj: dict, manifests: Manifests, prefix: str, redis_url: str | None, report: Report) -> None:
    """One ScaledObject: a worker's every ready list, read from the Redis the services use."""
    where = label(obj)
    spec = obj.get("spec", {})
    unknown = set(spec) - SCALEDOBJECT_SPEC_KEYS
    report.check(not unknown, where, f"unknown spec fields {sorted(unknown)} (KEDA CRD is not schema-checked; typo?)")
    report.check(spec.get("minReplicaCount", 0) >= 1, where, "minReplicaCount must be at least 1: workers promote delayed jobs, so zero would never wake")
    target = spec.get("scaleTargetRef", {}).get("name")
    queue = WORKER_QUEUES.get(target)
    if not report.check(queue is not None, where, f"targets {target!r}, not a worker ({', '.join(sorted(WORKER_QUEUES))})"):
        return
    # A partitioned queue (QUEUE_PARTITIONS on the worker) has ready lists
    # per partition: {queue} is partition 0, {queue#p} partition p.
    partitions = worker_partitions(manifests, target, report, where)
    pattern = re.compile(rf"^{re.escape(prefix)}:\{{{re.escape(queue)}(?:#([1-9][0-9]*))?\}}:ready:(high|normal|low)$")
    seen = []
    kinds = set()
    for trigger in spec.get("triggers") or []:
        kind = trigger.get("type")
        if kind not in KEDA_REDIS_TRIGGERS:
            continue
        kinds.add(kind)
        meta = {k: str(v) for k, v in (trigger.get("metadata") or {}).items()}
        list_name = meta.get("listName", "")
        unknown = set(meta) - KEDA_REDIS_TRIGGERS[kind]
        report.check(not unknown, where, f"{kind} trigger for {list_name!r} has metadata KEDA does not read for {kind}: {sorted(unknown)}")
        match = pattern.match(list_name)
        report.check(match is not None, where, f"listName {list_name!r} is not {prefix}:{{{queue}}}:ready:<high|normal|low> (the queue of {target}, prefix from ConfigMap tally-common)")
        if match:
            partition = int(match.group(1) or 0)
            report.check(partition < partitions, where, f"listName {list_name!r} is a list of partition {partition}, but {target} sets QUEUE_PARTITIONS={partitions}")
            seen.append((partition, match.group(2)))
        report.check(meta.get("listLength", "").isdigit(), where, f"listLength of {list_name!r} must be a number")
        if kind == "redis":
            has_address = bool(meta.get("address") or meta.get("addressFromEnv") or meta.get("host") or meta.get("hostFromEnv"))
            report.check(has_address, where, f"trigger for {list_name!r} has no Redis address")
        else:
            check_cluster_addresses(meta, list_name, report, where)
        check_trigger_auth(trigger, manifests, report, where)
    expected = sorted((p, prio) for p in range(partitions) for prio in PRIORITIES)
    shown = [prio if partitions == 1 and p == 0 else f"{p}:{prio}" for p, prio in seen]
    report.check(
        sorted(seen) == expected,
        where,
        f"expected one redis trigger per ready list of queue {queue!r} (priorities {PRIORITIES}"
        + (f", partitions 0-{partitions - 1}" if partitions > 1 else "")
        + f"), found {shown}",
    )
    report.check(len(kinds) <= 1, where, f"mixes trigger types {sorted(kinds)}: the queues live on one Redis, a cluster or not")
    if redis_url and kinds:
        cluster = is_cluster_url(redis_url)
        expected = "redis-cluster" if cluster else "redis"
        mode = "a Redis Cluster URL" if cluster else "a single-server URL"
        report.check(kinds == {expected}, where, f"uses {sorted(kinds)} triggers but REDIS_URL in Secret tally-secrets is {mode}: KEDA must read it with `{expected}`")


def worker_partitions(manifests: Manifests, deployment: str, report: Report, where: str) -> int:
    """The QUEUE_PARTITIONS a worker Deployment sets (1 when unset)."""
    obj = manifests.get("Deployment", deployment)
    if obj is None:
        return 1
    for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        value = resolve_env(container, manifests, report, where).get("QUEUE_PARTITIONS")
        if value is None:
            continue
        if not report.check(value.isdigit() and 1 <= int(value) <= 64, where, f"QUEUE_PARTITIONS of {deployment} must be 1 to 64, not {value!r}"):
            return 1
        return int(value)
    return 1


def check_cluster_addresses(meta: dict[str, str], list_name: str, report: Report, where: str) -> None:
    """The seed nodes of a redis-cluster trigger: `addresses`, or `hosts` with as many `ports`."""
    if meta.get("addressesFromEnv") or meta.get("hostsFromEnv"):
        return
    if meta.get("addresses"):
        pairs = host_port_list(meta["addresses"])
        bad = [f"{h}:{p}" if h else p for h, p in pairs if not h or not p.isdigit()]
        report.check(bool(pairs) and not bad, where, f"addresses of {list_name!r} must be host:port, comma-separated; not {bad or meta['addresses']!r}")
        return
    hosts = [h.strip() for h in meta.get("hosts", "").split(",") if h.strip()]
    ports = [p.strip() for p in meta.get("ports", "").split(",") if p.strip()]
    if not report.check(bool(hosts), where, f"redis-cluster trigger for {list_name!r} has no addresses (or hosts and ports)"):
        return
    report.check(len(hosts) == len(ports), where, f"trigger for {list_name!r} names {len(hosts)} hosts and {len(ports)} ports; KEDA needs one port per host")
    report.check(all(p.isdigit() for p in ports), where, f"ports of {list_name!r} must be numbers: {ports}")


def check_trigger_auth(trigger: dict, manifests: Manifests, report: Report, where: str) -> None:
    """An authenticationRef names a rendered TriggerAuthentication that hands the scaler known parameters from existing keys."""
    ref = trigger.get("authenticationRef")
    if not ref:
        return
    if ref.get("kind", "TriggerAuthentication") != "TriggerAuthentication":
        return
    auth = manifests.get("TriggerAuthentication", ref.get("name", ""))
    if not report.check(auth is not None, where, f"authenticationRef names TriggerAuthentication {ref.get('name')!r}, which is not in the manifests"):
        return
    for item in auth.get("spec", {}).get("secretTargetRef") or []:
        parameter = item.get("parameter")
        report.check(parameter in KEDA_REDIS_AUTH_PARAMS, label(auth), f"parameter {parameter!r} is not one KEDA's Redis scalers read ({', '.join(sorted(KEDA_REDIS_AUTH_PARAMS))})")
        keys = manifests.secret_keys(item.get("name", ""))
        if keys is not None:
            report.check(item.get("key") in keys, label(auth), f"reads key {item.get('key')!r} missing from Secret {item.get('name')!r}")


def check_namespace(manifests: Manifests, report: Report) -> None:
    namespaces = {name_of(n) for n in manifests.of_kind("Namespace")}
    for obj in manifests.objects:
        if obj.get("kind") == "Namespace":
            continue
        ns = obj.get("metadata", {}).get("namespace")
        report.check(ns in namespaces, label(obj), f"namespace {ns!r} is not one of the rendered Namespaces {sorted(namespaces)}")


def check_migration(manifests: Manifests, report: Report) -> None:
    jobs = manifests.of_kind("Job")
    migrations = []
    for job in jobs:
        check_workload(job, manifests, report)
        for container in pod_template(job).get("spec", {}).get("containers") or []:
            if binary_of(container.get("image", "")) == "tally" and (container.get("args") or container.get("command") or [None])[0] == "migrate":
                migrations.append(job)
    report.check(len(migrations) == 1, "Job", f"expected one Job running `tally migrate`, found {len(migrations)}")


def check(objects: list[dict]) -> Report:
    """All invariants over one rendered overlay."""
    manifests = Manifests(objects)
    report = Report()
    for name in ("tally-common",):
        report.check(manifests.configmap_data(name) is not None, f"ConfigMap/{name}", "missing")
    deployments = manifests.of_kind("Deployment")
    names = {name_of(d) for d in deployments}
    for expected in ("cron-gateway", "scoring-worker", "stats-worker", CONSOLE):
        report.check(expected in names, f"Deployment/{expected}", "missing")
    for deployment in deployments:
        check_deployment(deployment, manifests, report)
    check_cronjob(manifests, report)
    check_network_policy(manifests, report)
    for name in (GATEWAY, CONSOLE):
        check_redis_only_egress(manifests, report, name)
    check_console(manifests, report)
    check_autoscaling(manifests, report)
    check_migration(manifests, report)
    check_namespace(manifests, report)
    return report


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: check_k8s_invariants.py RENDERED.yaml [...]", file=sys.stderr)
        return 2
    failed = False
    for path in argv[1:]:
        objects = [doc for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if doc]
        report = check(objects)
        for failure in report.failures:
            print(f"FAIL {path}: {failure}")
        if report.failures:
            failed = True
            print(f"{path}: {len(report.failures)} invariant(s) broken ({report.checked} checks)")
        else:
            print(f"{path}: all {report.checked} invariant checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
