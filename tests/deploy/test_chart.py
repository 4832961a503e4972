"""The Helm chart (helm/swapmeter): what it renders for each value set, checked with Helm's
linter, the Kubernetes JSON schemas (offline) and checkov, and against the code it runs:
its commands are the CLI's, its environment the settings', its queue metric the one the
workers export."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.cli import build_parser
from app.core.settings import Settings
from app.jobs.metrics import JOBS_IN_QUEUE
from tests.deploy.chart import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    VALUE_SETS,
    Rendered,
    containers,
    documented_values,
    env_of,
    leaf_values,
    pod_spec,
    render,
)
from tests.deploy.conftest import tool

API = f"{RELEASE}-api"
WORKER = f"{RELEASE}-worker"
MIGRATIONS = f"{RELEASE}-migrations"
WORKLOADS = (("Deployment", API), ("Deployment", WORKER), ("Job", MIGRATIONS))
# Kubernetes releases the manifests must be valid for: the chart's kubeVersion floor, and
# the newest one kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


# Variables the chart sets that are not Settings fields, and who reads them.
READ_ELSEWHERE = {
    "HOME": "libraries' caches (the root filesystem is read-only)",
    "AWS_DEFAULT_REGION": "boto3 (S3 results)",
    "SWAPMETER_LOG_LEVEL": "app/cli.py, before the settings are read",
    "SWAPMETER_LOG_FORMAT": "app/core/logs.py, before the settings are read",
}


def test_variables_read_outside_the_settings_are_read():
    assert "SWAPMETER_LOG_LEVEL" in (REPO_ROOT / "app" / "cli.py").read_text()
    assert "SWAPMETER_LOG_FORMAT" in (REPO_ROOT / "app" / "core" / "logs.py").read_text()


def secret_refs(container: dict[str, Any]) -> list[str]:
    return [ref["secretRef"]["name"] for ref in container.get("envFrom", [])]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and `In` expressions) applied to labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


# -- what each value set renders ------------------------------------------------------------


def test_default_values_render_the_api_the_worker_and_the_migrations_hook(rendered):
    r = rendered["default"]
    assert {"Deployment", "Service", "Job", "Secret", "ServiceAccount"} <= r.kinds()
    assert {
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
        "Ingress",
    }.isdisjoint(r.kinds())
    assert r.get("Deployment", API)["spec"]["replicas"] == 2
    assert r.get("Deployment", WORKER)["spec"]["replicas"] == 1
    assert not [
        cm for cm in r.of_kind("ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]
    ]

    job = r.get("Job", MIGRATIONS)
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hook["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # Without the secret values the chart still renders, and says what is missing.
    assert "secrets.databaseUrl and secrets.redisUrl" in r.notes


def test_every_container_runs_a_real_swapmeter_command(rendered):
    """Each container's command line parses with `swapmeter`'s own argument parser, so a
    flag the CLI does not have (or no longer has) fails here, not in the cluster."""
    parser = build_parser()
    seen = set()
    for r in rendered.values():
        for kind, name in WORKLOADS:
            for c in containers(r.get(kind, name)):
                if c["command"] == ["swapmeter"]:
                    lines = [c["args"]]
                else:  # the init container's shell script: one swapmeter command a line
                    assert c["command"] == ["/bin/sh", "-ec"]
                    lines = [shlex.split(line)[1:] for line in c["args"][0].splitlines()]
                    assert lines
                for argv in lines:
                    args = parser.parse_args(argv)
                    seen.add((args.command, getattr(args, "models_command", None)))
    assert seen == {("api", None), ("worker", None), ("migrate", None), ("models", "fetch")}

    api = rendered["default"].get("Deployment", API)["spec"]["template"]["spec"]["containers"][0]
    args = parser.parse_args(api["args"])
    assert (args.port, args.workers) == (8000, 2)
    assert api["ports"][0]["containerPort"] == args.port
    worker = pod_spec(rendered["default"].get("Deployment", WORKER))["containers"][0]
    args = parser.parse_args(worker["args"])
    assert (args.metrics_port, args.concurrency) == (9101, 1)
    # Prometheus and the probes reach a pod's metrics from outside it: all interfaces,
    # where `swapmeter worker` alone listens on loopback.
    assert args.metrics_host == "0.0.0.0"
    assert env_of(worker)["SWAPMETER_JOBS_WORKER_METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("value_set", ["default", "existing_secret", "gpu"])
def test_the_rendered_environment_is_settings_swapmeter_accepts(rendered, value_set, monkeypatch):
    """Every SWAPMETER_* variable the chart sets is a setting, and together with the
    secrets they make settings that validate (production: a real JWT secret; s3: a bucket)."""
    r = rendered[value_set]
    if r.of_kind("Secret"):
        secret = r.get("Secret", RELEASE)["data"]
        secrets = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    else:  # what the operator's existing Secret holds
        secrets = {"SWAPMETER_JWT_SECRET": "x" * 40, "SWAPMETER_AUDIT_KEY": "a" * 40}
    secrets |= {
        "SWAPMETER_DATABASE_URL": "postgresql://u:p@db:5432/swapmeter",
        "SWAPMETER_REDIS_URL": "redis://redis:6379/0",
    }
    fields = set(Settings.model_fields)
    for kind, name in WORKLOADS:
        for c in containers(r.get(kind, name)):
            env = env_of(c)
            for var in env:
                assert var in READ_ELSEWHERE or (
                    var.startswith("SWAPMETER_") and var[10:].lower() in fields
                ), f"{name}/{c['name']}: {var} is no setting of app/core/settings.py"
            for var in [v for v in os.environ if v.startswith("SWAPMETER_")]:
                monkeypatch.delenv(var)
            for var, value in {**env, **secrets}.items():
                monkeypatch.setenv(var, value)
            settings = Settings(_env_file=None)
            assert settings.environment == "production"
            assert settings.data_dir == Path("/var/lib/swapmeter")
            assert settings.models_dir == Path("/models")
            if value_set == "existing_secret":
                assert settings.results_backend == "s3"
                assert settings.results_s3_bucket == "swapmeter-results"
            else:
                assert settings.results_backend == "local"
                assert str(settings.results_path) == "/var/lib/swapmeter-results"


def test_gpu_values_give_the_worker_gpus_the_gpu_image_and_cuda(rendered):
    worker = rendered["gpu"].get("Deployment", WORKER)
    spec = pod_spec(worker)
    main = spec["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert main["resources"]["limits"]["memory"] == "8Gi"  # the CPU limits stay
    assert main["image"] == "swapmeter/swapmeter:0.1.0-gpu"
    assert env_of(main)["SWAPMETER_EXECUTION_PROVIDERS"] == "cuda,cpu"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    # The API and the migrations stay on the CPU image, without GPUs.
    api = pod_spec(rendered["gpu"].get("Deployment", API))["containers"][0]
    assert api["image"] == "swapmeter/swapmeter:0.1.0"
    assert "nvidia.com/gpu" not in api["resources"]["limits"]
    # Off by default.
    cpu = pod_spec(rendered["default"].get("Deployment", WORKER))
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert "SWAPMETER_EXECUTION_PROVIDERS" not in env_of(cpu["containers"][0])
    assert "tolerations" not in cpu


def test_gpu_workers_fetch_their_models_before_they_start(rendered):
    spec = pod_spec(rendered["gpu"].get("Deployment", WORKER))
    (init,) = spec["initContainers"]
    assert "swapmeter models fetch --quiet yunet" in init["args"][0]
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and not mounts["models"].get("readOnly")
    worker_mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert worker_mounts["models"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-models"


def test_autoscaling_scales_the_api_on_cpu_and_the_workers_on_the_queue(rendered):
    r = rendered["autoscaling"]
    hpa = r.get("HorizontalPodAutoscaler", API)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": API,
    }
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in r.get("Deployment", API)["spec"]  # the HPA owns it

    scaled = r.get("ScaledObject", WORKER)
    assert scaled["spec"]["scaleTargetRef"]["name"] == WORKER
    assert scaled["spec"]["minReplicaCount"] == 0
    assert "replicas" not in r.get("Deployment", WORKER)["spec"]  # KEDA owns it
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    # The gauge the workers (and the API's /metrics) really export, for this release.
    assert JOBS_IN_QUEUE._name in query
    assert (
        f'namespace="{NAMESPACE}"' in query
        and f'service=~"{RELEASE}-(api|worker-metrics)"' in query
    )
    # KEDA refuses trigger metadata that is not a string.
    assert all(isinstance(v, str) for v in trigger["metadata"].values())


def test_existing_secret_renders_no_secret_and_every_pod_reads_the_given_one(rendered):
    r = rendered["existing_secret"]
    assert r.of_kind("Secret") == []
    for kind, name in WORKLOADS:
        doc = r.get(kind, name)
        for c in containers(doc):
            assert "swapmeter-env" in secret_refs(c), f"{name}/{c['name']}"
        assert "checksum/secret" not in (
            doc["spec"]["template"]["metadata"].get("annotations") or {}
        )
    # S3 results: the credentials' Secret too, and no results volume.
    api = pod_spec(r.get("Deployment", API))
    assert secret_refs(api["containers"][0]) == ["swapmeter-env", "s3"]
    assert "results" not in {v["name"] for v in api["volumes"]}
    assert [p["metadata"]["name"] for p in r.of_kind("PersistentVolumeClaim")] == [
        f"{RELEASE}-models"
    ]

    # The default: the chart's own Secret, and the hook's copy for the migrations.
    d = rendered["default"]
    assert secret_refs(pod_spec(d.get("Deployment", API))["containers"][0]) == [RELEASE]
    assert secret_refs(pod_spec(d.get("Job", MIGRATIONS))["containers"][0]) == [MIGRATIONS]
    hook = d.get("Secret", MIGRATIONS)
    assert hook["data"] == d.get("Secret", RELEASE)["data"]
    assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        d.get("Job", MIGRATIONS)["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert len(base64.b64decode(hook["data"]["SWAPMETER_JWT_SECRET"])) >= 32
    assert len(base64.b64decode(hook["data"]["SWAPMETER_AUDIT_KEY"])) >= 32


def test_the_migrations_can_connect_as_the_owner_and_the_pods_as_the_service_role():
    owner = "postgresql://swapmeter_owner:o@db:5432/swapmeter"
    service = "postgresql://swapmeter_app:s@db:5432/swapmeter"
    r = render({"secrets": {"databaseUrl": service, "migrationDatabaseUrl": owner}})
    url = base64.b64decode(r.get("Secret", RELEASE)["data"]["SWAPMETER_DATABASE_URL"]).decode()
    hook = base64.b64decode(r.get("Secret", MIGRATIONS)["data"]["SWAPMETER_DATABASE_URL"])
    assert (url, hook.decode()) == (service, owner)
    # Everything else of the hook's Secret is the release's.
    main_data = r.get("Secret", RELEASE)["data"]
    hook_data = r.get("Secret", MIGRATIONS)["data"]
    assert {k: v for k, v in hook_data.items() if k != "SWAPMETER_DATABASE_URL"} == {
        k: v for k, v in main_data.items() if k != "SWAPMETER_DATABASE_URL"
    }

    # An existing Secret: the migrations read the owner's URL from the key named.
    r = render(
        {
            "secrets": {"existingSecret": "swapmeter-env"},
            "migrations": {"existingSecretDatabaseUrlKey": "SWAPMETER_OWNER_DATABASE_URL"},
        }
    )
    job = pod_spec(r.get("Job", MIGRATIONS))["containers"][0]
    (url_var,) = [e for e in job["env"] if e["name"] == "SWAPMETER_DATABASE_URL"]
    assert url_var["valueFrom"]["secretKeyRef"] == {
        "name": "swapmeter-env",
        "key": "SWAPMETER_OWNER_DATABASE_URL",
    }
    api = pod_spec(r.get("Deployment", API))["containers"][0]
    assert "SWAPMETER_DATABASE_URL" not in env_of(api)


def test_the_audit_keys_given_reach_the_pods():
    r = render(
        {
            "secrets": {
                "auditKey": "n" * 40,
                "auditKeyId": "2027-01",
                "auditOldKeys": "k1:" + "o" * 40,
            }
        }
    )
    data = {k: base64.b64decode(v).decode() for k, v in r.get("Secret", RELEASE)["data"].items()}
    assert data["SWAPMETER_AUDIT_KEY"] == "n" * 40
    assert data["SWAPMETER_AUDIT_KEY_ID"] == "2027-01"
    assert data["SWAPMETER_AUDIT_OLD_KEYS"] == "k1:" + "o" * 40


def test_ingress_routes_the_public_paths_over_tls_and_not_the_metrics(rendered):
    ingress = rendered["existing_secret"].get("Ingress", RELEASE)
    assert ingress["spec"]["tls"] == [
        {"secretName": "swapmeter-tls", "hosts": ["swapmeter.example.com"]}
    ]
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"] for p in rule["http"]["paths"]}
    assert paths == {"/api", "/docs", "/openapi.json"}
    for p in rule["http"]["paths"]:
        assert p["backend"]["service"] == {"name": API, "port": {"name": "http"}}


def test_monitoring_scrapes_the_api_and_the_workers(rendered):
    r = rendered["monitoring"]
    monitor = r.get("ServiceMonitor", RELEASE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    services = [
        s
        for s in r.of_kind("Service")
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in services) == [API, f"{WORKER}-metrics"]
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in services:
        # Each selected Service has a port an endpoint scrapes.
        assert endpoint_ports & {p["name"] for p in service["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_a_metrics_token_guards_every_metrics_endpoint_and_prometheus_sends_it(rendered):
    """metrics.token.existingSecret: the API and the workers read the token from it, and
    the ServiceMonitor sends it on both of its endpoints; without it, neither."""
    r = rendered["monitoring"]
    ref = {"secretKeyRef": {"name": "swapmeter-metrics", "key": "metrics-token"}}
    for name in (API, WORKER):
        container = pod_spec(r.get("Deployment", name))["containers"][0]
        [token] = [e for e in container["env"] if e["name"] == "SWAPMETER_METRICS_TOKEN"]
        assert token["valueFrom"] == ref, name
    endpoints = r.get("ServiceMonitor", RELEASE)["spec"]["endpoints"]
    assert {e["port"] for e in endpoints} == {"http", "metrics"}
    for endpoint in endpoints:
        assert endpoint["bearerTokenSecret"] == ref["secretKeyRef"]
    d = rendered["default"]
    for name in (API, WORKER):
        assert "SWAPMETER_METRICS_TOKEN" not in env_of(
            pod_spec(d.get("Deployment", name))["containers"][0]
        )


def expected_rule_groups(chart_dir: Path) -> list[dict[str, Any]]:
    groups = []
    for path in sorted((chart_dir / "alerts").glob("*.yaml")):
        groups += (yaml.safe_load(path.read_text()) or {}).get("groups") or []
    return groups


def assert_ships_the_files(r: Rendered, chart_dir: Path) -> None:
    groups = expected_rule_groups(chart_dir)
    rules = r.of_kind("PrometheusRule")
    if groups:
        (rule,) = rules
        assert rule["spec"]["groups"] == groups
    else:
        assert rules == []
    dashboards = sorted((chart_dir / "dashboards").glob("*.json"))
    maps = [
        cm
        for cm in r.of_kind("ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(maps) == len(dashboards)
    shipped = {key: text for cm in maps for key, text in cm["data"].items()}
    assert sorted(shipped) == [p.name for p in dashboards]
    for path in dashboards:
        assert shipped[path.name] == path.read_text().rstrip("\n")
        json.loads(shipped[path.name])


def test_monitoring_ships_every_alert_group_and_dashboard_of_the_chart(rendered):
    assert_ships_the_files(rendered["monitoring"], CHART_DIR)
    for cm in rendered["monitoring"].of_kind("ConfigMap"):
        assert cm["metadata"]["annotations"]["grafana_folder"] == "SwapMeter"


def test_files_added_to_dashboards_and_alerts_are_shipped_without_a_template_change(tmp_path):
    chart = tmp_path / "swapmeter"
    shutil.copytree(CHART_DIR, chart)
    for folder in ("dashboards", "alerts"):
        shutil.rmtree(chart / folder, ignore_errors=True)
        (chart / folder / "tests").mkdir(parents=True)
    for name in ("api", "workers_and_inference"):
        board = {"uid": f"swapmeter-{name}", "title": name, "panels": [{"expr": "up"}]}
        (chart / "dashboards" / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")
    rule = {
        "alert": "QueueStalled",
        "expr": "max(swapmeter_jobs_oldest_queued_seconds) > 300",
        "for": "5m",
        "labels": {"severity": "page"},
        "annotations": {"summary": "Oldest job waited {{ $value }}s"},
    }
    (chart / "alerts" / "a.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "one", "rules": [rule]}]})
    )
    (chart / "alerts" / "b.yaml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "two", "rules": [rule]}, {"name": "three", "rules": [rule]}]}
        )
    )
    # promtool unit tests are not rules: neither beside the rules nor in tests/.
    test_file = {"rule_files": ["../a.yaml"], "tests": [{"interval": "1m"}]}
    (chart / "alerts" / "a.test.yaml").write_text(yaml.safe_dump(test_file))
    (chart / "alerts" / "tests" / "b.test.yaml").write_text(yaml.safe_dump({"groups": "not rules"}))

    r = render(VALUE_SETS["monitoring"], chart)
    (prometheus_rule,) = r.of_kind("PrometheusRule")
    assert [g["name"] for g in prometheus_rule["spec"]["groups"]] == ["one", "two", "three"]
    # Alert templates reach Prometheus as written, not expanded by Helm.
    assert prometheus_rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] == (
        "Oldest job waited {{ $value }}s"
    )
    assert_ships_the_files(r, chart)
    assert len([cm for cm in r.of_kind("ConfigMap")]) == 2

    # And with none of either, nothing to render, and no error.
    for folder in ("dashboards", "alerts"):
        shutil.rmtree(chart / folder)
    r = render(VALUE_SETS["monitoring"], chart)
    assert r.of_kind("PrometheusRule") == [] and r.of_kind("ConfigMap") == []


def test_network_policies_open_metrics_to_the_monitoring_namespace_only(rendered):
    r = rendered["default"]
    worker = r.get("NetworkPolicy", WORKER)["spec"]
    worker_pod = r.get("Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert selects(worker["podSelector"], worker_pod)
    (rule,) = worker["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }

    api = r.get("NetworkPolicy", API)["spec"]
    assert selects(
        api["podSelector"], r.get("Deployment", API)["spec"]["template"]["metadata"]["labels"]
    )
    (rule,) = api["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "from" not in rule  # the API port from anywhere: the ingress controller, other pods

    migrations = r.get("NetworkPolicy", MIGRATIONS)["spec"]
    assert migrations["policyTypes"] == ["Ingress"] and "ingress" not in migrations


def test_disruption_budgets_cover_each_workload(rendered):
    r = rendered["default"]
    for name in (API, WORKER):
        pdb = r.get("PodDisruptionBudget", name)
        labels = r.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selects(pdb["spec"]["selector"], labels)
        assert pdb["spec"]["maxUnavailable"] == 1
    other = render({"api": {"pdb": {"minAvailable": "50%"}}}).get("PodDisruptionBudget", API)
    assert (
        other["spec"] == {**other["spec"], "minAvailable": "50%"}
        and "maxUnavailable" not in other["spec"]
    )


def test_every_container_is_non_root_read_only_and_probed(rendered):
    for r in rendered.values():
        for kind, name in WORKLOADS:
            spec = pod_spec(r.get(kind, name))
            assert spec["automountServiceAccountToken"] is False
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            volumes = {v["name"]: v for v in spec["volumes"]}
            for c in containers(r.get(kind, name)):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert c["resources"]["requests"] and c["resources"]["limits"]
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert "emptyDir" in volumes[mounts["/tmp"]]  # $HOME and temporary files
                assert env_of(c)["HOME"] == "/tmp"
            if kind == "Deployment":
                main = spec["containers"][0]
                # The data dir (job scratch files) is writable.
                mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
                assert "emptyDir" in volumes[mounts[env_of(main)["SWAPMETER_DATA_DIR"]]]
                assert main["livenessProbe"] and main["readinessProbe"]
    api = pod_spec(rendered["default"].get("Deployment", API))["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"


# -- the chart's own checks: schema, lint, README --------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"worker": {"gpu": {"enabeld": True}}}, "additional properties 'enabeld'"),
        ({"secrets": {"jwtSecret": "too-short"}}, "/secrets/jwtSecret"),
        ({"secrets": {"auditKey": "too-short"}}, "/secrets/auditKey"),
        ({"secrets": {"auditOldKeys": "no-id-given"}}, "/secrets/auditOldKeys"),
        ({"results": {"backend": "s3"}}, "/results/s3/bucket"),
        ({"results": {"backend": "nfs"}}, "/results/backend"),
        ({"api": {"workers": 0}}, "/api/workers"),
        ({"config": {"swapmeter_lower": "x"}}, "invalid propertyName 'swapmeter_lower'"),
        ({"models": {"fetch": ["yunet; rm -rf /models"]}}, "/models/fetch/0"),
    ],
)
def test_values_schema_refuses_values_that_cannot_work(values, complaint):
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=r"(?s)" + complaint.replace("(", r"\(")):
        render(values)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_passes(value_set):
    import helm_python as helm

    report = helm.lint(str(CHART_DIR), VALUE_SETS[value_set], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["total_charts_linted"] == 1
    assert problems == [] and report["errors"] == []


def test_chart_readme_lists_every_value_with_its_description():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    documented = documented_values()
    readme = (CHART_DIR / "README.md").read_text()
    for leaf in leaf_values(values):
        # A value is documented itself or as part of a documented mapping (resources...).
        parts = leaf.split(".")
        assert any(".".join(parts[:i]) in documented for i in range(len(parts), 0, -1)), leaf
    for key, description in documented.items():
        assert f"| `{key}` |" in readme, f"README.md does not list {key}"
        assert description.replace("|", "\\|") in readme, f"README.md's {key} is out of date"


# -- the manifests against Kubernetes' schemas and checkov ----------------------------------

# The CRDs' kinds are not in Kubernetes' schemas: these are the fields the chart uses, with
# the types the CRDs (Prometheus Operator v1, KEDA v1alpha1) give them.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "required": ["spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": DURATION,
                                "scrapeTimeout": DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "required": ["spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": DURATION,
                                            "keep_firing_for": DURATION,
                                            "labels": STRING_MAP,
                                            "annotations": STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "required": ["spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metadata": STRING_MAP,
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_every_manifest_validates_against_the_kubernetes_schemas(rendered):
    checked = set()
    for name, r in rendered.items():
        for doc in r.docs:
            crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
            if crd is not None:
                jsonschema.validate(doc, {"type": "object", **crd})
            else:
                for version in KUBE_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as exc:
                        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
                        pytest.fail(f"{where} (Kubernetes {version}): {exc.message}")
            checked.add(doc["kind"])
    assert {
        "Deployment",
        "Job",
        "Service",
        "Secret",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "ScaledObject",
    } <= checked


def test_a_misspelt_field_fails_the_schema_check(rendered):
    """The check above can fail: strict schemas refuse a field Kubernetes does not have."""
    deployment = json.loads(json.dumps(rendered["default"].get("Deployment", API)))
    pod_spec(deployment)["containers"][0]["securityContexts"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)
    scaled = json.loads(json.dumps(rendered["autoscaling"].get("ScaledObject", WORKER)))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            scaled, {"type": "object", **CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]}
        )


# The checks the workloads skip, with the reason in the chart (checkov.io/skipN annotations).
ALLOWED_SKIPS = {"CKV_K8S_35", "CKV_K8S_43", "CKV_K8S_15"}


def test_checkov_finds_no_misconfiguration(rendered_dir):
    run = subprocess.run(
        [
            tool("checkov"),
            "--directory",
            str(rendered_dir),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in results["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["passed"] > 500  # it did look: ~1,300 checks over 5 renderings
    for skip in results["skipped_checks"]:
        assert skip["check_id"] in ALLOWED_SKIPS, skip["check_id"]
        assert skip["check_result"]["suppress_comment"], (
            f"{skip['check_id']} skipped without a reason"
        )
