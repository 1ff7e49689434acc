#!/usr/bin/env python3
"""Offline checks of deploy/compose.yaml (there is no Docker engine to run
`docker compose config` here):

- it parses (YAML anchors and merge keys included) and has services;
- every depends_on target exists, uses a known condition, and is not behind a
  profile the dependent service is not in unless the dependency is
  `required: false`; a `service_healthy` target has a healthcheck; a
  `service_completed_successfully` target does not restart;
- the tally services build deploy/Dockerfile with BIN set to a real binary,
  use the image tally/<BIN>, read only env names that binary reads and have
  the required ones, carry no healthcheck (the images have no shell), run
  read-only with all capabilities dropped, and give the drain time to finish
  (stop_grace_period > SHUTDOWN_TIMEOUT_SECS + flush margin);
- services with a database wait for the migration to complete; files
  bind-mounted from the repository exist;
- every Redis server runs with AOF persistence;
- a Redis Cluster (servers with `--cluster-enabled yes`) has at least three
  masters with their replicas, all its nodes under one profile and
  health-checked, and a one-shot init service in that profile that waits for
  every node to be healthy and names exactly those nodes in
  REDIS_CLUSTER_NODES; every tally service using Redis waits for that init
  to complete (`required: false`, so it still starts without the profile);
  a cluster URL in .env.example names only nodes of that cluster;
- every ${VARIABLE} the file interpolates is documented in .env.example.

Usage: check_compose.py deploy/compose.yaml [deploy/.env.example]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_k8s_invariants import BINARIES, FLUSH_MARGIN_SECS  # noqa: E402

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def seconds(duration) -> float | None:
    """Compose durations: `40s`, `1m30s`, `500ms`, or a bare number of seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    if not isinstance(duration, str):
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)


def env_dict(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def depends(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def command_line(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(str(part) for part in command)


def redis_server(service: dict) -> bool:
    """A Redis server (the image's default command or redis-server), not a
    one-shot redis-cli run from the same image."""
    if not str(service.get("image", "")).startswith("redis"):
        return False
    command = command_line(service).split()
    return not command or command[0] == "redis-server"


def server_port(service: dict) -> int:
    match = re.search(r"--port\s+(\d+)", command_line(service))
    return int(match.group(1)) if match else 6379


def check_cluster(services: dict, servers: dict, cluster_urls: list[str]) -> list[str]:
    """The Redis Cluster of a profile, its init service and who waits for it."""
    failures: list[str] = []
    nodes = {name: s for name, s in servers.items() if re.search(r"--cluster-enabled\s+yes", command_line(s))}
    if not nodes:
        for url in cluster_urls:
            failures.append(f".env.example: {url} names a Redis Cluster, but no service runs one (--cluster-enabled yes)")
        return failures
    profile_sets = {tuple(sorted(s.get("profiles") or [])) for s in nodes.values()}
    if len(profile_sets) != 1 or not next(iter(profile_sets)):
        failures.append(f"cluster nodes {sorted(nodes)} must all run under the same profile (found {sorted(profile_sets)}); the default stack uses the single Redis")
        return failures
    profiles = set(next(iter(profile_sets)))
    for name, node in nodes.items():
        if not node.get("healthcheck"):
            failures.append(f"{name}: a cluster node needs a healthcheck (the init waits for it)")
    addresses = {f"{name}:{server_port(node)}" for name, node in nodes.items()}
    inits = {
        name: s
        for name, s in services.items()
        if name not in servers and "REDIS_CLUSTER_NODES" in env_dict(s) and set(s.get("profiles") or []) & profiles
    }
    if len(inits) != 1:
        failures.append(f"expected one init service in profile {sorted(profiles)} with REDIS_CLUSTER_NODES, found {sorted(inits)}")
        return failures
    init_name, init = next(iter(inits.items()))
    env = env_dict(init)
    named = set(str(env.get("REDIS_CLUSTER_NODES") or "").split())
    if named != addresses:
        failures.append(f"{init_name}: REDIS_CLUSTER_NODES names {sorted(named)}, the cluster nodes are {sorted(addresses)}")
    replicas = str(env.get("REDIS_CLUSTER_REPLICAS", "1"))
    if not replicas.isdigit():
        failures.append(f"{init_name}: REDIS_CLUSTER_REPLICAS={replicas!r} is not a number")
    elif len(nodes) < 3 * (1 + int(replicas)):
        failures.append(f"{init_name}: {len(nodes)} nodes cannot make three masters with {replicas} replica(s) each")
    for name in sorted(nodes):
        if (depends(init).get(name) or {}).get("condition") != "service_healthy":
            failures.append(f"{init_name}: must wait for {name} to be healthy")
    if init.get("restart", "no") not in ("no", False):
        failures.append(f"{init_name}: a one-shot service must not restart ({init.get('restart')!r})")
    for name, service in services.items():
        binary = ((service.get("build") or {}).get("args") or {}).get("BIN")
        if binary not in BINARIES or "REDIS_URL" not in BINARIES[binary]["required"]:
            continue
        spec = depends(service).get(init_name) or {}
        if spec.get("condition") != "service_completed_successfully":
            failures.append(f"{name}: uses Redis but does not wait for {init_name} to complete (condition: service_completed_successfully)")
        elif not (set(service.get("profiles") or []) & profiles) and spec.get("required", True) is not False:
            failures.append(f"{name}: waits for {init_name} without `required: false`, so it cannot start without the {sorted(profiles)} profile")
    for url in cluster_urls:
        hosts = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        unknown = sorted(h.strip() for h in hosts.split(",") if h.strip() and h.strip() not in addresses)
        if unknown:
            failures.append(f".env.example: {url} names {unknown}, which are not cluster nodes {sorted(addresses)}")
    return failures


def check_data(data: dict, documented: set[str] | None, root: Path | None = None, cluster_urls: list[str] | None = None) -> list[str]:
    cluster_urls = cluster_urls or []
    failures: list[str] = []
    services = data.get("services") or {}
    if not services:
        return ["no services"]

    for name, service in services.items():
        profiles = set(service.get("profiles") or [])
        for target, spec in depends(service).items():
            if target not in services:
                failures.append(f"{name}: depends on unknown service {target!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                failures.append(f"{name}: unknown depends_on condition {condition!r}")
            other = services[target]
            other_profiles = set(other.get("profiles") or [])
            required = (spec or {}).get("required", True)
            if not isinstance(required, bool):
                failures.append(f"{name}: depends_on {target}: required must be true or false, not {required!r}")
            if other_profiles and not (other_profiles & profiles) and required is not False:
                failures.append(f"{name}: depends on {target}, which only runs under profiles {sorted(other_profiles)} (add `required: false` if optional)")
            if condition == "service_healthy" and not other.get("healthcheck"):
                failures.append(f"{name}: depends on {target} being healthy, but {target} has no healthcheck")
            if condition == "service_completed_successfully" and other.get("restart", "no") not in ("no", False):
                failures.append(f"{name}: waits for {target} to complete, but {target} restarts ({other.get('restart')!r})")

        if root is not None:
            for volume in service.get("volumes") or []:
                source = (volume.split(":", 1)[0] if isinstance(volume, str) else str(volume.get("source", ""))) if volume else ""
                if source.startswith((".", "/")) and not (root / source).exists():
                    failures.append(f"{name}: bind-mounted {source} does not exist")

        build = service.get("build")
        if not isinstance(build, dict):
            continue
        binary = (build.get("args") or {}).get("BIN")
        if binary not in BINARIES:
            failures.append(f"{name}: build arg BIN={binary!r} is not one of {sorted(BINARIES)}")
            continue
        if root is not None:
            dockerfile = (root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
            if not dockerfile.is_file():
                failures.append(f"{name}: Dockerfile {dockerfile} not found")
        image = str(service.get("image", ""))
        if image.split(":", 1)[0] != f"tally/{binary}":
            failures.append(f"{name}: image {image!r} should be tally/{binary}[:tag]")
        env = env_dict(service)
        for var in sorted(env):
            if var not in BINARIES[binary]["env"]:
                failures.append(f"{name}: env {var} is not read by {binary}")
        for var in sorted(BINARIES[binary]["required"] - set(env)):
            failures.append(f"{name}: required env {var} is missing")
        if service.get("healthcheck"):
            failures.append(f"{name}: the {binary} image has no shell or curl; a compose healthcheck cannot run in it")
        if service.get("read_only") is not True:
            failures.append(f"{name}: should run with read_only: true")
        if "ALL" not in (service.get("cap_drop") or []):
            failures.append(f"{name}: should drop ALL capabilities")
        shutdown_default = BINARIES[binary]["shutdown"]
        if shutdown_default is not None:
            shutdown = float(env.get("SHUTDOWN_TIMEOUT_SECS") or shutdown_default)
            grace = seconds(service.get("stop_grace_period", "10s"))
            if grace is None or grace < shutdown + FLUSH_MARGIN_SECS:
                failures.append(
                    f"{name}: stop_grace_period {service.get('stop_grace_period', '10s (default)')!r} must be at least "
                    f"SHUTDOWN_TIMEOUT_SECS {shutdown:g} s + {FLUSH_MARGIN_SECS} s flush"
                )
        if "DATABASE_URL" in env and binary != "tally":
            migrations = [t for t, s in depends(service).items() if (s or {}).get("condition") == "service_completed_successfully"]
            if not any((services.get(t, {}).get("build") or {}).get("args", {}).get("BIN") == "tally" for t in migrations):
                failures.append(f"{name}: uses the database but does not wait for the migration to complete")

    servers = {name: service for name, service in services.items() if redis_server(service)}
    if not servers:
        failures.append("no Redis service")
    for name, service in servers.items():
        if not re.search(r"--appendonly\s+yes", command_line(service)):
            failures.append(f"{name}: AOF persistence is off (--appendonly yes)")
    failures += check_cluster(services, servers, cluster_urls)

    if documented is not None:
        text = yaml.safe_dump(data)
        for var in sorted(set(VARIABLE.findall(text)) - documented):
            failures.append(f"${{{var}}} is used but not documented in .env.example")
    return failures


def documented_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def cluster_urls_of(path: Path) -> list[str]:
    """The Redis Cluster URLs .env.example suggests (commented or not)."""
    return re.findall(r"rediss?\+cluster://[^\s\"']+", path.read_text(encoding="utf-8"))


def check(compose: Path, env_example: Path | None = None) -> list[str]:
    documented = documented_names(env_example) if env_example else None
    urls = cluster_urls_of(env_example) if env_example else []
    return check_data(load(compose), documented, compose.parent, urls)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: check_compose.py COMPOSE.yaml [ENV_EXAMPLE]", file=sys.stderr)
        return 2
    failures = check(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else None)
    for failure in failures:
        print(f"FAIL {argv[1]}: {failure}")
    if failures:
        return 1
    print(f"{argv[1]}: compose checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
