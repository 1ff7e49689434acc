#!/usr/bin/env python3
"""Tests of the deploy checks themselves: the real overlays pass, and each kind
of breakage the checks exist for makes them fail (so CI goes red on it).

Run: python3 -m unittest scripts/test_deploy_checks.py  (from the repository root)
"""

from __future__ import annotations

import copy
import subprocess
import sys
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
        self.assert_fails(objects, "no policy limits the gateway's egress")


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


if __name__ == "__main__":
    unittest.main()
