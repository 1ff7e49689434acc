#!/usr/bin/env python3
"""Tests of the deploy checks themselves: the real overlays pass, and each kind
of breakage the checks exist for makes them fail (so CI goes red on it).

Run: python3 -m unittest scripts/test_deploy_checks.py  (from the repository root)
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import check_compose  # noqa: E402
import check_k8s_invariants as inv  # noqa: E402
import yaml  # noqa: E402


def render(overlay):
    """The overlay's objects as `kubectl kustomize` renders them."""
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / overlay)], check=True, capture_output=True, text=True)
    return [o for o in yaml.safe_load_all(out.stdout) if o]


EXAMPLE = render("k8s/overlays/example")
KEDA = render("k8s/overlays/example-keda")
CLUSTER = render("k8s/overlays/example-cluster")


def find(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects, kind, name):
    obj = find(objects, kind, name)
    return inv.pod_template(obj)["spec"]["containers"][0]


class InvariantsTest(unittest.TestCase):
    def failures(self, objects):
        return inv.check(objects).failures

    def assert_fails(self, objects, *needles):
        failures = self.failures(objects)
        self.assertTrue(failures, "expected a failure, the checks passed")
        text = "\n".join(failures)
        for needle in needles:
            self.assertIn(needle, text)

    def test_the_real_overlays_pass(self):
        self.assertEqual(self.failures(EXAMPLE), [])
        self.assertEqual(self.failures(KEDA), [])
        self.assertEqual(self.failures(CLUSTER), [])

    def test_a_missing_probe_fails(self):
        objects = copy.deepcopy(EXAMPLE)
        del container(objects, "Deployment", "stats-worker")["readinessProbe"]
        self.assert_fails(objects, "Deployment/stats-worker", "readinessProbe is missing")

    def test_a_probe_on_the_wrong_path_fails(self):
        objects = copy.deepcopy(EXAMPLE)
        container(objects, "Deployment", "cron-gateway")["livenessProbe"]["httpGet"]["path"] = "/health"
        self.assert_fails(objects, "livenessProbe path is '/health'")

    def test_a_short_grace_period_fails(self):
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "Deployment", "scoring-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
        self.assert_fails(objects, "Deployment/scoring-worker", "terminationGracePeriodSeconds=20 is too short")

    def test_a_longer_drain_in_the_configmap_fails_the_grace_period(self):
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "ConfigMap", "tally-worker")["data"]["SHUTDOWN_TIMEOUT_SECS"] = "60"
        self.assert_fails(objects, "SHUTDOWN_TIMEOUT_SECS=60")

    def test_missing_limits_and_security_context_fail(self):
        objects = copy.deepcopy(EXAMPLE)
        c = container(objects, "Deployment", "scoring-worker")
        del c["resources"]["limits"]
        c["securityContext"]["readOnlyRootFilesystem"] = False
        c["securityContext"]["capabilities"]["drop"] = []
        self.assert_fails(objects, "resources.limits.memory is missing", "readOnlyRootFilesystem", "drop must contain ALL")

    def test_cron_path_port_and_auth_must_match_the_gateway(self):
        for bad_url, needle in [
            ("http://cron-gateway:8080/api/cron/update-stat", "calls path"),
            ("http://cron-gateway:80/api/cron/update-stats", "calls port 80"),
            ("http://scoring-worker:8080/api/cron/update-stats", "calls host"),
        ]:
            objects = copy.deepcopy(EXAMPLE)
            args = container(objects, "CronJob", "update-stats")["args"]
            args[-1] = bad_url
            self.assert_fails(objects, needle)
        objects = copy.deepcopy(EXAMPLE)
        args = container(objects, "CronJob", "update-stats")["args"]
        args.remove("--fail-with-body")
        self.assert_fails(objects, "non-2xx")

    def test_gateway_port_change_without_the_service_fails(self):
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "ConfigMap", "tally-gateway")["data"]["BIND_ADDR"] = "0.0.0.0:8081"
        self.assert_fails(objects, "probes port 8080 but the binary listens on 8081", "BIND_ADDR listens on 8081")

    def test_keda_list_names_follow_the_prefix(self):
        objects = copy.deepcopy(KEDA)
        find(objects, "ConfigMap", "tally-common")["data"]["TALLY_QUEUE_PREFIX"] = "prod"
        self.assert_fails(objects, "listName 'tally:{stats}:ready:high' is not prod:{stats}:ready:")
        objects = copy.deepcopy(KEDA)
        find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"][1]["metadata"]["listName"] = "tally:stats:ready:normal"
        self.assert_fails(objects, "listName 'tally:stats:ready:normal'")

    def test_triggers_cover_exactly_the_declared_partitions(self):
        objects = copy.deepcopy(CLUSTER)
        triggers = find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"]
        del triggers[6:]
        self.assert_fails(objects, "expected one redis trigger per ready list of queue 'stats'", "partitions 0-2", "found ['0:high'")
        objects = copy.deepcopy(CLUSTER)
        worker = container(objects, "Deployment", "stats-worker")
        next(e for e in worker["env"] if e["name"] == "QUEUE_PARTITIONS")["value"] = "2"
        self.assert_fails(objects, "is a list of partition 2, but stats-worker sets QUEUE_PARTITIONS=2")
        next(e for e in worker["env"] if e["name"] == "QUEUE_PARTITIONS")["value"] = "lots"
        self.assert_fails(objects, "QUEUE_PARTITIONS of stats-worker must be 1 to 64, not 'lots'")

    def test_every_ready_list_of_the_workers_queue_has_a_trigger(self):
        objects = copy.deepcopy(KEDA)
        triggers = find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"]
        del triggers[2]
        self.assert_fails(objects, "expected one redis trigger per ready list of queue 'stats'", "found ['high', 'normal']")
        objects = copy.deepcopy(CLUSTER)
        find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"][2]["metadata"]["listName"] = "tally:{scoring}:ready:low"
        self.assert_fails(objects, "listName 'tally:{scoring}:ready:low' is not tally:{stats}:ready:")
        objects = copy.deepcopy(CLUSTER)
        find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"].append(
            copy.deepcopy(find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"][0])
        )
        self.assert_fails(objects, "'2:low', '0:high']")
        # A worker's autoscaler reads that worker's queue, and owns its replica count.
        objects = copy.deepcopy(CLUSTER)
        scaled = copy.deepcopy(find(objects, "ScaledObject", "stats-worker"))
        scaled["metadata"]["name"] = "scoring-worker"
        scaled["spec"]["scaleTargetRef"]["name"] = "scoring-worker"
        objects.append(scaled)
        self.assert_fails(
            objects,
            "listName 'tally:{stats}:ready:high' is not tally:{scoring}:ready:<high|normal|low> (the queue of scoring-worker",
            "Deployment/scoring-worker: must not set replicas",
        )
        objects = copy.deepcopy(CLUSTER)
        find(objects, "ScaledObject", "stats-worker")["spec"]["scaleTargetRef"]["name"] = "admin-console"
        self.assert_fails(objects, "targets 'admin-console', not a worker")

    def test_the_trigger_type_follows_redis_url(self):
        objects = copy.deepcopy(CLUSTER)
        find(objects, "Secret", "tally-secrets")["stringData"]["REDIS_URL"] = "redis://redis.tally.svc.cluster.local:6379"
        self.assert_fails(objects, "uses ['redis-cluster'] triggers but REDIS_URL in Secret tally-secrets is a single-server URL")
        objects = copy.deepcopy(KEDA)
        find(objects, "Secret", "tally-secrets")["stringData"]["REDIS_URL"] = "redis+cluster://a.example:6379,b.example:6379"
        self.assert_fails(objects, "uses ['redis'] triggers but REDIS_URL in Secret tally-secrets is a Redis Cluster URL: KEDA must read it with `redis-cluster`")
        objects = copy.deepcopy(CLUSTER)
        keda_trigger = find(KEDA, "ScaledObject", "stats-worker")["spec"]["triggers"][1]
        find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"][1] = copy.deepcopy(keda_trigger)
        self.assert_fails(objects, "mixes trigger types ['redis', 'redis-cluster']")

    def test_cluster_trigger_metadata_is_checked(self):
        def broken(change):
            objects = copy.deepcopy(CLUSTER)
            change(find(objects, "ScaledObject", "stats-worker")["spec"]["triggers"][0])
            return objects

        def single_address(trigger):
            trigger["metadata"]["address"] = trigger["metadata"].pop("addresses").split(",")[0]

        self.assert_fails(broken(single_address), "metadata KEDA does not read for redis-cluster: ['address']", "has no addresses")

        def hosts_and_ports(trigger):
            del trigger["metadata"]["addresses"]
            trigger["metadata"]["hosts"] = "a.example, b.example, c.example"
            trigger["metadata"]["ports"] = "6379, 6379"

        self.assert_fails(broken(hosts_and_ports), "names 3 hosts and 2 ports")

        def no_port(trigger):
            trigger["metadata"]["addresses"] = "a.example:6379, b.example"

        self.assert_fails(broken(no_port), "must be host:port, comma-separated; not ['b.example']")

        def typo(trigger):
            trigger["metadata"]["listname"] = trigger["metadata"].pop("listName")

        self.assert_fails(broken(typo), "does not read for redis-cluster: ['listname']")

        def other_auth(trigger):
            trigger["authenticationRef"]["name"] = "tally-redis"

        self.assert_fails(broken(other_auth), "TriggerAuthentication 'tally-redis', which is not in the manifests")
        objects = copy.deepcopy(CLUSTER)
        find(objects, "TriggerAuthentication", "tally-redis-cluster")["spec"]["secretTargetRef"][0]["key"] = "REDIS_PASSWRD"
        self.assert_fails(objects, "reads key 'REDIS_PASSWRD' missing from Secret 'tally-secrets'")

    def test_the_gateway_reaches_every_cluster_seed(self):
        objects = copy.deepcopy(CLUSTER)
        find(objects, "Secret", "tally-secrets")["stringData"]["REDIS_URL"] = "redis+cluster://:pw@a.example:6379,b.example:7000/"
        self.assert_fails(objects, "does not admit Redis (REDIS_URL) on 7000/TCP")
        self.assertEqual(inv.redis_ports("rediss+cluster://u:p@a:1,b:2"), [1, 2])
        self.assertEqual(inv.redis_ports("redis+cluster://a,b:7001/"), [6379, 7001])
        self.assertEqual(inv.redis_ports("redis://:pw@redis:6380/0"), [6380])

    def test_two_autoscalers_fail(self):
        hpa = find(EXAMPLE, "HorizontalPodAutoscaler", "stats-worker")
        objects = copy.deepcopy(KEDA) + [copy.deepcopy(hpa)]
        self.assert_fails(objects, "exactly one autoscaler")

    def test_unknown_env_names_and_images_fail(self):
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "ConfigMap", "tally-worker")["data"]["WORKER_CONCURENCY"] = "5"
        self.assert_fails(objects, "env WORKER_CONCURENCY is not read by scoring-worker")
        objects = copy.deepcopy(EXAMPLE)
        container(objects, "Deployment", "scoring-worker")["image"] = "registry.example.com/tally/stats-worker:0.1.0"
        self.assert_fails(objects, "runs image of 'stats-worker'")
        objects = copy.deepcopy(EXAMPLE)
        container(objects, "CronJob", "update-stats")["image"] = "busybox:1"
        self.assert_fails(objects, "image 'busybox:1' is not a tally binary")

    def test_an_open_network_policy_fails(self):
        objects = copy.deepcopy(EXAMPLE)
        policy = find(objects, "NetworkPolicy", "cron-gateway-ingress")
        policy["spec"]["ingress"].append({"from": [{"namespaceSelector": {}}]})
        self.assert_fails(objects, "is not the 'monitoring' namespace")

    def test_the_gateway_reaches_redis_never_postgres(self):
        objects = copy.deepcopy(EXAMPLE)
        container(objects, "Deployment", "cron-gateway")["env"].append(
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "tally-secrets", "key": "DATABASE_URL"}}}
        )
        self.assert_fails(objects, "env DATABASE_URL is not read by cron-gateway")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "NetworkPolicy", "cron-gateway-egress")["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 5432}]})
        self.assert_fails(objects, "admits PostgreSQL's port 5432")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "NetworkPolicy", "cron-gateway-egress")["spec"]["egress"].append({"to": [{"namespaceSelector": {}}]})
        self.assert_fails(objects, "without `ports` admits every port")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "Secret", "tally-secrets")["stringData"]["REDIS_URL"] = "rediss://redis.example.com:6380"
        self.assert_fails(objects, "does not admit Redis (REDIS_URL) on 6380/TCP")
        objects = [o for o in copy.deepcopy(EXAMPLE) if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "cron-gateway-egress")]
        self.assert_fails(objects, "no policy limits the egress of cron-gateway")

    def test_the_console_reaches_redis_never_postgres(self):
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "NetworkPolicy", "admin-console-egress")["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 5432}]})
        self.assert_fails(objects, "the egress of admin-console admits PostgreSQL's port 5432")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "Secret", "tally-secrets")["stringData"]["REDIS_URL"] = "rediss://redis.example.com:6380"
        self.assert_fails(objects, "the egress of admin-console does not admit Redis (REDIS_URL) on 6380/TCP")
        objects = [o for o in copy.deepcopy(EXAMPLE) if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "admin-console-egress")]
        self.assert_fails(objects, "no policy limits the egress of admin-console")


    def test_console_tokens_replicas_and_policy_are_checked(self):
        objects = copy.deepcopy(EXAMPLE)
        console = container(objects, "Deployment", "admin-console")
        console["env"] = [e for e in console["env"] if e["name"] != "ADMIN_TOKEN"] + [{"name": "ADMIN_TOKEN", "value": "in-the-manifest-0123456789"}]
        self.assert_fails(objects, "ADMIN_TOKEN must come from a secretKeyRef")
        objects = copy.deepcopy(EXAMPLE)
        container(objects, "Deployment", "cron-gateway")["env"].append(
            {"name": "CRON_SECRET_OLD", "valueFrom": {"secretKeyRef": {"name": "tally-admin-console", "key": "ADMIN_TOKEN"}}}
        )
        self.assert_fails(objects, "which holds the console's tokens")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "Deployment", "admin-console")["spec"]["replicas"] = 2
        self.assert_fails(objects, "replicas must be 1")
        objects = copy.deepcopy(EXAMPLE)
        policy = find(objects, "NetworkPolicy", "admin-console-ingress")
        policy["spec"]["ingress"].append({"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tally"}}}]})
        self.assert_fails(objects, "admits pods of tally's own namespace")
        objects = copy.deepcopy(EXAMPLE)
        find(objects, "ConfigMap", "tally-admin-console")["data"]["ADMIN_BIND_ADDR"] = "0.0.0.0:9999"
        self.assert_fails(objects, "ADMIN_BIND_ADDR listens on 9999")
        objects = [o for o in copy.deepcopy(EXAMPLE) if o["kind"] != "NetworkPolicy" or o["metadata"]["name"] != "admin-console-ingress"]
        self.assert_fails(objects, "no policy restricts ingress to the console")


class OverlaysTest(unittest.TestCase):
    """What the overlays are meant to change, as kustomize renders them."""

    def test_images_namespace_patch_and_delete(self):
        gateway = container(EXAMPLE, "Deployment", "cron-gateway")
        self.assertEqual(gateway["image"], "registry.example.com/tally/cron-gateway:0.1.0")
        self.assertTrue(all(o["metadata"].get("namespace") == "tally" for o in EXAMPLE if o["kind"] != "Namespace"))
        data = find(EXAMPLE, "ConfigMap", "tally-common")["data"]
        self.assertEqual(data["SENTRY_ENVIRONMENT"], "example")
        self.assertEqual(data["TALLY_QUEUE_PREFIX"], "tally", "patch merges, not replaces")
        self.assertFalse([o for o in KEDA if o["kind"] == "HorizontalPodAutoscaler"], "delete patch removes the HPA")


    def test_the_cluster_overlay_scales_like_the_keda_overlay_on_the_cluster(self):
        url = find(CLUSTER, "Secret", "tally-secrets")["stringData"]["REDIS_URL"]
        self.assertTrue(url.startswith("redis+cluster://"), url)
        self.assertFalse([o for o in CLUSTER if o["kind"] == "HorizontalPodAutoscaler"], "delete patch removes the HPA")
        keda = find(KEDA, "ScaledObject", "stats-worker")["spec"]
        cluster = find(CLUSTER, "ScaledObject", "stats-worker")["spec"]
        self.assertEqual({k: v for k, v in cluster.items() if k != "triggers"}, {k: v for k, v in keda.items() if k != "triggers"})
        seeds = url.split("://", 1)[1].split(",")
        # Partition 0's lists are the keda component's; partitions 1 and 2
        # (QUEUE_PARTITIONS=3) add theirs, with the same threshold.
        self.assertEqual(len(cluster["triggers"]), 3 * len(keda["triggers"]))
        partition_of = [0] * 3 + [1] * 3 + [2] * 3
        for p, ours, theirs in zip(partition_of, cluster["triggers"], keda["triggers"] * 3):
            self.assertEqual(ours["type"], "redis-cluster")
            list_name = theirs["metadata"]["listName"]
            if p:
                list_name = list_name.replace("{stats}", "{stats#%d}" % p)
            self.assertEqual(ours["metadata"]["listName"], list_name)
            self.assertEqual(ours["metadata"]["listLength"], theirs["metadata"]["listLength"])
            addresses = [a.strip() for a in ours["metadata"]["addresses"].split(",")]
            self.assertEqual(addresses, seeds, "KEDA reads the cluster the services use")
        env = container(CLUSTER, "Deployment", "stats-worker")["env"]
        self.assertIn({"name": "QUEUE_PARTITIONS", "value": "3"}, env)
        auth_keda = find(KEDA, "TriggerAuthentication", "tally-redis")["spec"]
        auth_cluster = find(CLUSTER, "TriggerAuthentication", cluster["triggers"][0]["authenticationRef"]["name"])["spec"]
        self.assertEqual(auth_cluster, auth_keda)
        # Everything else is the example environment, unchanged.
        def rest(objects):
            objects = copy.deepcopy([o for o in objects if o["kind"] not in ("Secret", "ScaledObject", "TriggerAuthentication")])
            worker = container(objects, "Deployment", "stats-worker")
            worker["env"] = [e for e in worker.get("env", []) if e["name"] != "QUEUE_PARTITIONS"]
            return objects

        self.assertEqual(rest(CLUSTER), rest(KEDA))


    def test_keda_and_redis_cluster_components_do_not_combine(self):
        with tempfile.TemporaryDirectory() as tmp:
            k8s = os.path.relpath(ROOT / "k8s", tmp)
            Path(tmp, "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources: [{k8s}/overlays/example]\ncomponents: [{k8s}/components/keda, {k8s}/components/redis-cluster]\n",
                encoding="utf-8",
            )
            out = subprocess.run(["kubectl", "kustomize", tmp], capture_output=True, text=True)
        self.assertNotEqual(out.returncode, 0, "kustomize must refuse two ScaledObjects for stats-worker")
        self.assertIn("ScaledObject", out.stderr)


class ComposeTest(unittest.TestCase):
    def test_the_real_compose_file_passes(self):
        self.assertEqual(check_compose.check(ROOT / "deploy/compose.yaml", ROOT / "deploy/.env.example"), [])

    def test_breakage_is_caught(self):
        compose = check_compose.load(ROOT / "deploy/compose.yaml")
        broken = copy.deepcopy(compose)
        del broken["services"]["redis"]["healthcheck"]
        broken["services"]["stats-worker"]["depends_on"]["postgress"] = {"condition": "service_healthy"}
        broken["services"]["scoring-worker"]["environment"]["WORKER_CONCURENCY"] = "5"
        del broken["services"]["scoring-worker"]["stop_grace_period"]
        failures = "\n".join(check_compose.check_data(broken, set()))
        self.assertIn("depends on redis being healthy, but redis has no healthcheck", failures)
        self.assertIn("depends on unknown service 'postgress'", failures)
        self.assertIn("WORKER_CONCURENCY is not read by scoring-worker", failures)
        self.assertIn("stop_grace_period", failures)

    def test_cluster_profile_breakage_is_caught(self):
        compose = check_compose.load(ROOT / "deploy/compose.yaml")
        urls = check_compose.cluster_urls_of(ROOT / "deploy/.env.example")
        self.assertTrue(urls, ".env.example shows the cluster URL")

        def failures(change, cluster_urls=urls):
            broken = copy.deepcopy(compose)
            change(broken["services"])
            return "\n".join(check_compose.check_data(broken, None, ROOT / "deploy", cluster_urls))

        def required(services):
            del services["stats-worker"]["depends_on"]["redis-cluster-init"]["required"]

        self.assertIn("stats-worker: depends on redis-cluster-init, which only runs under profiles ['cluster']", failures(required))

        def no_wait(services):
            del services["scoring-worker"]["depends_on"]["redis-cluster-init"]

        self.assertIn("scoring-worker: uses Redis but does not wait for redis-cluster-init", failures(no_wait))

        def no_aof(services):
            services["redis-node-3"]["command"] = [c for c in services["redis-node-3"]["command"] if c not in ("--appendonly", "yes")]

        self.assertIn("redis-node-3: AOF persistence is off", failures(no_aof))

        def five_nodes(services):
            del services["redis-node-6"]
            del services["redis-cluster-init"]["depends_on"]["redis-node-6"]

        text = failures(five_nodes)
        self.assertIn("REDIS_CLUSTER_NODES names", text)
        self.assertIn("5 nodes cannot make three masters with 1 replica(s) each", text)

        def unhealthy_wait(services):
            services["redis-cluster-init"]["depends_on"]["redis-node-2"] = {"condition": "service_started"}

        self.assertIn("redis-cluster-init: must wait for redis-node-2 to be healthy", failures(unhealthy_wait))

        def default_profile(services):
            del services["redis-node-1"]["profiles"]

        self.assertIn("must all run under the same profile", failures(default_profile))

        def missing_script(services):
            services["redis-cluster-init"]["volumes"] = ["./redis-cluster-inti.sh:/usr/local/bin/redis-cluster-init.sh:ro"]

        self.assertIn("bind-mounted ./redis-cluster-inti.sh does not exist", failures(missing_script))
        wrong_url = ["redis+cluster://redis-node-1:6379,redis-node-7:6379"]
        self.assertIn("names ['redis-node-7:6379'], which are not cluster nodes", failures(lambda s: None, wrong_url))


@unittest.skipUnless(shutil.which("redis-server") and shutil.which("redis-cli"), "needs redis-server and redis-cli")
class RedisClusterInitTest(unittest.TestCase):
    """deploy/redis-cluster-init.sh against six real nodes, each on an address
    of its own (127.0.x.y, all on one port) as containers would be: it
    creates the cluster, accepts one that exists, brings one back whose nodes
    all came back on other addresses, and refuses a mix of new and old nodes."""

    SCRIPT = ROOT / "deploy/redis-cluster-init.sh"

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="tally-cluster-init-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.port = random.randint(20000, 29999)
        self.procs = {}
        self.addCleanup(self.stop_all)
        # The names the script resolves, as compose's DNS would.
        (self.tmp / "bin").mkdir()
        getent = self.tmp / "bin/getent"
        getent.write_text(f"#!/bin/sh\nawk -v h=\"$2\" '$1 == h {{ print $2 \" \" $1 }}' {self.tmp}/hosts\n", encoding="utf-8")
        getent.chmod(0o755)

    def start(self, node, ip):
        data = self.tmp / node
        data.mkdir(exist_ok=True)
        args = [
            "redis-server", "--bind", ip, "--bind-source-addr", ip, "--port", str(self.port),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            "--appendonly", "yes", "--save", "", "--dir", str(data), "--logfile", str(data / "log"),
        ]
        self.procs[node] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-h", ip, "-p", str(self.port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return
            if self.procs[node].poll() is not None:
                self.skipTest(f"redis-server cannot listen on {ip} (needs Redis 7 and the 127.0.0.0/8 loopback)")
            time.sleep(0.05)
        self.fail(f"{node} on {ip} did not start")

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.procs = {}

    def run_on(self, ips):
        """Start node-1..6 on these addresses (keeping their data) and run the script."""
        (self.tmp / "hosts").write_text("".join(f"redis-node-{i} {ip}\n" for i, ip in enumerate(ips, 1)), encoding="utf-8")
        for i, ip in enumerate(ips, 1):
            if f"n{i}" not in self.procs:
                self.start(f"n{i}", ip)
        env = dict(
            os.environ,
            PATH=f"{self.tmp}/bin:{os.environ['PATH']}",
            REDIS_CLUSTER_NODES=" ".join(f"redis-node-{i}:{self.port}" for i in range(1, 7)),
            REDIS_CLUSTER_TIMEOUT="30",
        )
        return subprocess.run(["sh", str(self.SCRIPT)], env=env, capture_output=True, text=True, timeout=90)

    def cli(self, ip, *args):
        return subprocess.run(["redis-cli", "-c", "-h", ip, "-p", str(self.port), *args], capture_output=True, text=True, check=True).stdout.strip()

    def test_create_rerun_new_addresses_and_a_mix(self):
        net = random.randint(64, 250)
        first = [f"127.0.{net}.{i}" for i in range(1, 7)]
        out = self.run_on(first)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("creating the cluster", out.stdout)
        self.assertIn("cluster_state:ok on all 6 nodes", out.stdout)
        # Each node's own view of its role (another node's view lags by a heartbeat).
        roles = sorted(self.cli(ip, "role").split("\n")[0] for ip in first)
        self.assertEqual(roles, ["master"] * 3 + ["slave"] * 3, roles)
        self.cli(first[0], "rpush", "tally:{stats}:ready:normal", "j1", "j2", "j3")
        self.cli(first[0], "wait", "1", "2000")

        out = self.run_on(first)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("already form a cluster", out.stdout)

        # Every node back on another address (another network, shuffled).
        self.stop_all()
        moved = [f"127.0.{net + 1}.{i}" for i in (4, 6, 5, 1, 3, 2)]
        out = self.run_on(moved)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("cluster_state:ok on all 6 nodes", out.stdout)
        self.assertEqual(self.cli(moved[0], "llen", "tally:{stats}:ready:normal"), "3", "the queue survived")

        # One node's data gone: neither a fresh cluster nor the old one.
        gone = self.procs.pop("n6")
        gone.terminate()
        gone.wait(10)
        shutil.rmtree(self.tmp / "n6")
        out = self.run_on(moved)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("1 node(s) are new and 5 belong to a cluster", out.stderr)


if __name__ == "__main__":
    unittest.main()
