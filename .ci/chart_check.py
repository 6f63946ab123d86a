"""Checks of the Helm chart, run by .ci/test-chart inside its venv (helm-python-sdk, kubernetes-validate).

    python .ci/chart_check.py           # check; exit 1 on any failure
    python .ci/chart_check.py --update  # rewrite config/install.yaml and charts/hearth/crds/ first

What it checks, for the default values and each variation in VARIANTS:
  - helm lint (strict) passes;
  - every rendered object is valid against the Kubernetes OpenAPI schema (strict: unknown
    fields fail) of each version in KUBE_VERSIONS;
  - the render holds only the kinds in ALLOWED_KINDS;
  - every RBAC rule is preceded by a "# why:" comment, and the permissions granted are exactly
    those in the expected table below (nothing more, nothing missing);
  - the objects fit together (names, selectors, bindings, mounts) and the controller pod is
    Pod Security "restricted";
  - the operator config in the ConfigMap has exactly the keys the controller reads;
  - with dashboards.enabled, the dashboard ConfigMap carries the sidecar's label and every file
    of charts/hearth/dashboards/ as valid Grafana JSON; with alerts.enabled, the PrometheusRule
    has the expected alerts, each with summary, description and a runbook_url whose section
    exists in docs/runbooks.md, and passes `promtool check rules`; switched off, neither renders.
Then: charts/hearth/crds/ is a byte-identical copy of crds/, config/install.yaml is the default
render, config/prometheus/hearth-rules.yaml is the rules' render and passes `promtool test
rules` with charts/hearth/tests/alerts.test.yaml (each alert tested firing and not firing),
and values the chart must refuse are refused. (Tests/dashboards.rs checks that every query
names only metrics the controller registers.)
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "hearth"
CRDS_SRC = ROOT / "crds" / "hearth.dev.yaml"
CRDS_COPY = CHART / "crds" / "hearth.dev.yaml"
INSTALL = ROOT / "config" / "install.yaml"
E2E_VALUES = ROOT / "e2e" / "values.yaml"
INSTALL_DOC = ROOT / "docs" / "install.md"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DASHBOARDS = CHART / "dashboards"
RULES = ROOT / "config" / "prometheus" / "hearth-rules.yaml"
RULES_TEST = CHART / "tests" / "alerts.test.yaml"
# The values config/prometheus/hearth-rules.yaml is rendered with (a store, so every alert is in it).
RULES_VALUES = {"alerts": {"enabled": True}, "snapshot": {"store": "s3://bucket/prefix"}}
PROMTOOL = shutil.which("promtool")
ALERTS = {"HearthControllerDown", "HearthNoLeader", "HearthReconcileErrors", "HearthBuildFailureRatio",
          "HearthCacheHitRatioCollapse", "HearthStoreErrors", "HearthSnapshotsFallingBehind",
          "HearthNodeOverBudget"}
STORE_ONLY_ALERTS = {"HearthSnapshotsFallingBehind"}  # rendered only with snapshot.store set

RELEASE = "hearth"
NAMESPACE = "hearth-system"
KUBE_VERSIONS = ["1.33.0", "1.37.0"]  # the API version the controller is built for, and the newest schemas we have
LEASE_NAME = "hearth-controller"

ALLOWED_KINDS = {
    "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "ConfigMap", "Service", "ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget",
    "PrometheusRule",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaces": {"namespaces": ["team-a", "team-b"]},
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "no-networkPolicy": {"networkPolicy": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    "s3-minio": {"snapshot": {"store": "s3://hearth/caches", "s3": {"endpoint": "http://minio.minio:9000", "pathStyle": True}}},
    "s3-aws": {"snapshot": {"store": "s3://acme-hearth/prod"}, "networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1/32"]}}},
    "file-store": {"snapshot": {"store": "file:///stores/hearth", "fileStoreClaim": "hearth-store"}},
    "custom": {
        "replicaCount": 1, "logFormat": "text", "fullnameOverride": "builds",
        "image": {"tag": "dev"}, "imagePullSecrets": [{"name": "ghcr"}],
        "builder": {"nodeSelector": {"hearth.dev/builder": "true"},
                    "tolerations": [{"key": "hearth.dev/builder", "operator": "Exists", "effect": "NoSchedule"}]},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    },
    "e2e": yaml.safe_load(E2E_VALUES.read_text()),  # what e2e/up.sh installs
    "observability": {
        "serviceMonitor": {"enabled": True},
        "dashboards": {"enabled": True, "namespace": "monitoring", "label": "grafana_dashboard",
                       "labelValue": "hearth", "annotations": {"grafana_folder": "Hearth"}},
        "alerts": {"enabled": True, "labels": {"release": "prometheus"}, "alertLabels": {"team": "platform"},
                   "hitRatio": {"dropFactor": 0.3, "baseline": "7d"}},
        "snapshot": {"store": "s3://acme-hearth/prod"},
    },
    "alerts-no-store": {"alerts": {"enabled": True, "job": "hearth"}, "dashboards": {"enabled": True}},
    "tekton": {"tekton": {"enabled": True}},
    "tekton-namespaces": {"tekton": {"enabled": True}, "namespaces": ["team-a"]},
    "clone": {"cache": {"cloneStorageClasses": ["topolvm-thin"], "cloneBindTimeout": "1m"}},
    "no-user-roles": {"rbac": {"aggregateUserRoles": False}},
    "own-serviceAccount": {"serviceAccount": {"create": False, "name": "platform-hearth"}},
    "named-serviceAccount": {"serviceAccount": {"name": "hearth-ops", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}}},
    "securityContexts": {
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "runAsUser": 10001},
    },
    "builder-image-string": {"builder": {"image": "mirror.corp/moby/buildkit:v0.25.1-rootless"}},
    "builder-image": {"builder": {"image": {"repository": "mirror.corp/moby/buildkit", "tag": "v0.24.0-rootless"}}},
    "builder-pod": {"builder": {
        "serviceAccountName": "hearth-builder", "imagePullSecrets": [{"name": "mirror"}, {"name": "ghcr"}],
        "podLabels": {"team": "platform"}, "podAnnotations": {"example.com/cost": "builds"},
        "priorityClassName": "builds", "runtimeClassName": "runc", "readOnlyRuntimeClassName": "kata",
        "proxy": {"httpProxy": "http://proxy.corp:3128", "httpsProxy": "http://proxy.corp:3128", "noProxy": ".svc,10.0.0.0/8"},
        "registryLogin": {"providers": ["ecr", "gcp"], "registries": ["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]},
    }},
    "buildkitd": {"buildkitd": {"registries": [
        {"host": "docker.io", "mirrors": ["mirror.corp:5000"]},
        {"host": "mirror.corp:5000", "http": True},
        {"host": "registry.internal", "ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
    ]}},
    "retention-off": {"retention": {"ttlAfterSucceeded": None, "ttlAfterFailed": "", "succeededLimit": None,
                                    "failedLimit": 0, "minAge": "5m"}},
}

# Values the chart must refuse at render time, and a word the error must contain.
INVALID_VALUES = [
    ({"logFormat": "xml"}, "logFormat"),
    ({"snapshot": {"store": "gs://bucket"}}, "store"),
    ({"snapshot": {"stor": "s3://typo/in-the-key"}}, "stor"),
    ({"cache": {"size": "lots"}}, "size"),
    ({"snapshot": {"store": "file:///stores/hearth"}}, "fileStoreClaim"),
    ({"snapshot": {"store": "s3://bucket/p", "credentialsSecret": ""}}, "credentialsSecret"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
    ({"builder": {"image": {"repository": ""}}}, "image"),
    ({"alerts": {"buildFailures": {"window": "an hour"}}}, "window"),
    ({"alerts": {"job": 'hearth"} or vector(1)'}}, "job"),
]

# The permissions the controller needs (see the "why" comments in templates/rbac.yaml).
NAMESPACED_PERMS = {
    ("hearth.dev", "imagebuilds"): {"get", "list", "watch", "create", "patch", "delete"},
    ("hearth.dev", "imagebuilds/status"): {"update"},
    ("hearth.dev", "imagebuilds/finalizers"): {"update"},
    ("hearth.dev", "buildcaches"): {"get", "list", "watch", "create", "patch"},
    ("hearth.dev", "buildcaches/status"): {"update"},
    ("hearth.dev", "buildcaches/finalizers"): {"update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
# Added to NAMESPACED_PERMS with cache.cloneStorageClasses: a refused clone is told in Events.
CLONE_PERMS = {
    ("", "events"): {"list"},
}
# Added to NAMESPACED_PERMS with tekton.enabled: the Tekton custom task.
TEKTON_PERMS = {
    ("tekton.dev", "customruns"): {"get", "list", "watch"},
    ("tekton.dev", "customruns/status"): {"patch"},
    ("tekton.dev", "customruns/finalizers"): {"update"},
}
# The aggregated user roles (rbac.aggregateUserRoles), by name suffix: the default roles each
# is aggregated into, and the permissions it adds there. Never bound by the chart itself.
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
USER_ROLES = {
    "view": ({"view", "edit", "admin"}, {
        ("hearth.dev", "imagebuilds"): {"get", "list", "watch"},
        ("hearth.dev", "buildcaches"): {"get", "list", "watch"},
    }),
    "edit": ({"edit", "admin"}, {
        ("hearth.dev", "imagebuilds"): {"create", "update", "patch", "delete", "deletecollection"},
    }),
    "admin": ({"admin"}, {
        ("hearth.dev", "buildcaches"): {"create", "update", "patch", "delete", "deletecollection"},
    }),
}
CLUSTER_PERMS = {
    ("", "nodes"): {"get", "list", "watch"},
    ("", "persistentvolumes"): {"get", "list", "watch"},
}
LEASE_PERMS = {
    ("coordination.k8s.io", "leases", ""): {"create"},
    ("coordination.k8s.io", "leases", LEASE_NAME): {"get", "update", "patch"},
}

# The operator config file, key by key (the controller's contract).
CONFIG_KEYS = {
    "builder": {"image", "hearthImage", "imagePullPolicy", "resources", "nodeSelector", "tolerations",
                "serviceAccountName", "automountServiceAccountToken", "imagePullSecrets", "podLabels",
                "podAnnotations", "priorityClassName", "runtimeClassName", "readOnlyRuntimeClassName", "proxy",
                "defaultArch", "registryLogin"},
    "builder.proxy": {"httpProxy", "httpsProxy", "noProxy"},
    "builder.registryLogin": {"providers", "registries"},
    "cache": {"storageClassName", "size", "nodeBudget", "maxReplicas", "cloneStorageClasses", "cloneBindTimeout"},
    "snapshot": {"store", "credentialsSecret", "fileStoreClaim", "s3", "every", "minInterval", "retain",
                 "gcInterval", "gcGrace", "deleteTimeout"},
    "snapshot.s3": {"endpoint", "region", "pathStyle"},
    "namespaces": None,
    "tekton": {"enabled"},
    "buildkitd": {"registries"},
    "retention": {"ttlAfterSucceeded", "ttlAfterFailed", "succeededLimit", "failedLimit", "minAge"},
}

# Order of kinds in config/install.yaml (as Helm installs them).
INSTALL_ORDER = ["Namespace", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "ConfigMap",
                 "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment",
                 "ServiceMonitor"]


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as e:
            self.failed.append(name)
            print(f"FAIL {name}: {e}")
        except Exception as e:  # a crash in a check is a failure of that check, not of the run
            self.failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def split_docs(text: str) -> list[str]:
    """Split a rendered template into its YAML documents (text, comments kept)."""
    docs = re.split(r"(?m)^---\s*$", text)
    return [d.strip("\n") for d in docs if yaml.safe_load(d) is not None]


def rendered_docs(rendered: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(template, document text, parsed object) for every object, NOTES.txt left out."""
    out = []
    for template in sorted(rendered):
        if template.endswith("NOTES.txt"):
            continue
        for text in split_docs(rendered[template]):
            out.append((template, text, yaml.safe_load(text)))
    return out


def find(objs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objs: list[dict], kind: str, **kw: Any) -> dict:
    found = find(objs, kind, **kw)
    assert len(found) == 1, f"expected exactly one {kind} {kw or ''}, found {len(found)}"
    return found[0]


def merged_values(values: dict) -> dict:
    """The values a release with these overrides uses."""
    with helm.Chart.load(str(CHART)) as chart:
        return deep_merge(chart.values, values)


def optional(objs: list[dict], kind: str, enabled: bool) -> dict | None:
    """The one object of a kind the values switch on, or None when they switch it off."""
    if not enabled:
        assert not find(objs, kind), f"{kind} rendered although switched off"
        return None
    return one(objs, kind)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def dashboard_maps(objs: list[dict], merged: dict) -> list[dict]:
    """The ConfigMaps Grafana's sidecar picks up (by the label the values name)."""
    key, value = merged["dashboards"]["label"], merged["dashboards"]["labelValue"]
    return [o for o in find(objs, "ConfigMap") if (o["metadata"].get("labels") or {}).get(key) == value]


def config_map(objs: list[dict]) -> dict:
    """The operator config ConfigMap (there may be a dashboard ConfigMap beside it)."""
    found = [o for o in find(objs, "ConfigMap") if "config.yaml" in (o.get("data") or {})]
    assert len(found) == 1, f"expected exactly one ConfigMap with config.yaml, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- checks on one render

def check_lint(values: dict) -> None:
    for kv in KUBE_VERSIONS:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{kv}")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        assert not report.get("errors") and not problems, f"helm lint (kube {kv}): {report}"


def check_kinds(objs: list[dict]) -> None:
    extra = sorted({o["kind"] for o in objs} - ALLOWED_KINDS)
    assert not extra, f"kinds the operator does not need: {extra}"


def check_schemas(objs: list[dict]) -> None:
    errors = []
    for o in objs:
        ident = f'{o["kind"]}/{o["metadata"]["name"]}'
        if o["kind"] in ("ServiceMonitor", "PrometheusRule"):
            continue  # not Kubernetes kinds: checked by check_service_monitor and check_prometheus_rule
        for kv in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(o, kv, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{ident} (kube {kv}) at {path or '<root>'}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{ident}: {e.message}")
    assert not errors, "\n  " + "\n  ".join(errors)


RULE_START = re.compile(r"^(\s*)- apiGroups:")


def check_rbac_why(docs: list[tuple[str, str, dict]]) -> None:
    """Every rule of every Role/ClusterRole has a '# why:' comment block right above it."""
    missing = []
    for template, text, obj in docs:
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if RULE_START.match(line)]
        assert len(starts) == len(obj.get("rules") or []), \
            f"{template}: rules must start with '- apiGroups:' (found {len(starts)} for {len(obj['rules'])} rules)"
        for i in starts:
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# why:"):
                j -= 1  # continuation lines of the comment
            if j < 0 or not lines[j].strip().startswith("# why:") or len(lines[j].strip()) < 15:
                missing.append(f'{obj["kind"]}/{obj["metadata"]["name"]}: rule at "{lines[i + 1].strip()}"')
    assert not missing, "RBAC rules without a '# why:' comment:\n  " + "\n  ".join(missing)


def grants(rule: dict) -> set[tuple[str, str, str, str]]:
    names = rule.get("resourceNames") or [""]
    return {(g, r, n, v) for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for n in names for v in rule.get("verbs", [])}


def expected(perms: dict) -> set[tuple[str, str, str, str]]:
    out = set()
    for key, verbs in perms.items():
        g, r, n = key if len(key) == 3 else (*key, "")
        out |= {(g, r, n, v) for v in verbs}
    return out


def check_rbac(objs: list[dict], values: dict) -> None:
    sa_ref = (service_account_name(objs, values), NAMESPACE)
    watched = values.get("namespaces") or []
    namespaced = expected(NAMESPACED_PERMS) | (expected(TEKTON_PERMS) if merged_values(values)["tekton"]["enabled"] else set())
    namespaced |= expected(CLONE_PERMS) if merged_values(values)["cache"]["cloneStorageClasses"] else set()
    for role in find(objs, "ClusterRole") + find(objs, "Role"):
        for rule in role.get("rules", []):
            flat = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])]
            assert "*" not in flat, f'{role["kind"]}/{role["metadata"]["name"]}: wildcard in {rule}'
            assert "secrets" not in rule.get("resources", []), "the controller never reads Secrets"
            assert not rule.get("nonResourceURLs"), "no non-resource URLs are needed"

    def granted(kind: str, namespace: str | None) -> set:
        """What the ServiceAccount gets through bindings of this kind in this namespace."""
        out: set = set()
        binding_kind = "ClusterRoleBinding" if kind == "ClusterRole" else "RoleBinding"
        for b in find(objs, binding_kind, namespace=namespace):
            subjects = {(s["name"], s.get("namespace")) for s in b.get("subjects", [])}
            assert subjects == {sa_ref}, f'{binding_kind}/{b["metadata"]["name"]} binds {subjects}, not only {sa_ref}'
            ref = b["roleRef"]
            assert ref["kind"] == kind, f'{binding_kind} {b["metadata"]["name"]} refers to a {ref["kind"]}'
            role = one(objs, kind, name=ref["name"], namespace=namespace)
            for rule in role.get("rules", []):
                out |= grants(rule)
        return out

    cluster_expected = expected(CLUSTER_PERMS) | (set() if watched else namespaced)
    diff(granted("ClusterRole", None), cluster_expected, "cluster-wide")
    namespaces = {o["metadata"]["namespace"] for o in find(objs, "Role") + find(objs, "RoleBinding")}
    assert namespaces == set(watched) | {NAMESPACE}, f"Roles in {sorted(namespaces)}, expected {sorted(set(watched) | {NAMESPACE})}"
    for ns in namespaces:
        want = (namespaced if ns in watched else set()) | (expected(LEASE_PERMS) if ns == NAMESPACE else set())
        diff(granted("Role", ns), want, f"in namespace {ns}")


def check_user_roles(objs: list[dict], values: dict) -> None:
    """The aggregated ClusterRoles: exactly the expected ones with their labels and permissions,
    bound by nothing in the chart; none when rbac.aggregateUserRoles is off."""
    aggregated = [o for o in find(objs, "ClusterRole")
                  if any(k.startswith(AGGREGATE) for k in o["metadata"].get("labels", {}))]
    if not merged_values(values)["rbac"]["aggregateUserRoles"]:
        assert not aggregated, "aggregated user roles rendered although switched off"
        return
    by_suffix = {o["metadata"]["name"].rsplit("-", 1)[-1]: o for o in aggregated}
    assert set(by_suffix) == set(USER_ROLES) and len(aggregated) == len(USER_ROLES), \
        f"aggregated roles {sorted(o['metadata']['name'] for o in aggregated)}"
    bound = {b["roleRef"]["name"] for b in find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding")}
    for suffix, (into, perms) in USER_ROLES.items():
        role = by_suffix[suffix]
        labels = {k[len(AGGREGATE):] for k, v in role["metadata"]["labels"].items() if k.startswith(AGGREGATE) and v == "true"}
        assert labels == into, f"{role['metadata']['name']} aggregates into {sorted(labels)}, expected {sorted(into)}"
        assert role["metadata"]["name"] not in bound, f"{role['metadata']['name']} is bound by the chart"
        got: set = set()
        for rule in role["rules"]:
            got |= grants(rule)
        diff(got, expected(perms), f"of {role['metadata']['name']}")


def diff(got: set, want: set, where: str) -> None:
    extra, missing = sorted(got - want), sorted(want - got)
    assert not extra and not missing, (
        f"permissions {where} differ from the expected table:"
        + (f"\n  granted but not needed: {extra}" if extra else "")
        + (f"\n  needed but not granted: {missing}" if missing else ""))


def service_account_name(objs: list[dict], values: dict) -> str:
    """The controller's ServiceAccount: the chart's own (exactly one, named serviceAccount.name
    or the full name), or, with serviceAccount.create false, the named one and none rendered."""
    sa = merged_values(values)["serviceAccount"]
    created = find(objs, "ServiceAccount")
    if not sa["create"]:
        assert not created, "serviceAccount.create is false but a ServiceAccount is rendered"
        return sa["name"]
    (one_sa,) = created
    assert not sa["name"] or one_sa["metadata"]["name"] == sa["name"], "serviceAccount.name"
    return one_sa["metadata"]["name"]


def check_deployment(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert matches(spec["selector"]["matchLabels"], labels), "Deployment selector does not match its pods"
    assert spec["replicas"] == merged["replicaCount"], "replicas"
    assert pod["serviceAccountName"] == service_account_name(objs, values), "serviceAccountName"
    assert pod.get("automountServiceAccountToken") is True, "the controller needs its token"
    assert 20 <= pod.get("terminationGracePeriodSeconds", 30) <= 60, "terminationGracePeriodSeconds ~30 (lease release)"
    (c,) = pod["containers"]
    for key in ("podSecurityContext", "securityContext"):
        if key in values:
            got = pod.get("securityContext") if key == "podSecurityContext" else c.get("securityContext")
            assert got == merged[key], f"{key}: {got} != {merged[key]}"
    assert c["args"][0] == "controller", "runs `hearth controller`"
    args = dict(a.split("=", 1) for a in c["args"][1:])
    assert set(args) == {"--config", "--admin-addr", "--log-format"}, f"flags: {sorted(args)}"
    assert args["--log-format"] in ("json", "text")
    port = int(args["--admin-addr"].rsplit(":", 1)[1])
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "admin"] == [port], "admin port"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}, f"env: {env}"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ("admin", port), f"{probe} port"
    # Pod Security "restricted" (and a read-only root filesystem).
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "non-root"
    assert (csc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type") == "RuntimeDefault", "seccomp"
    assert csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc["capabilities"].get("add"), "capabilities"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), "host namespaces"
    # The config file is the ConfigMap's.
    cm = config_map(objs)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    config_dir, config_file = args["--config"].rsplit("/", 1)
    vol = vols[mounts[config_dir]]
    assert vol["configMap"]["name"] == cm["metadata"]["name"] and config_file in cm["data"], "config mount"
    for v in vols.values():
        assert set(v) & {"configMap", "emptyDir"}, f"unexpected volume {v}"
    # Other objects select these pods.
    svc = one(objs, "Service")
    assert matches(svc["spec"]["selector"], labels), "Service selector"
    assert svc["spec"]["ports"][0]["targetPort"] in ("admin", port), "Service targetPort"
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in find(objs, kind):
            sel = o["spec"]["selector"] if kind == "PodDisruptionBudget" else o["spec"]["podSelector"]
            assert matches(sel["matchLabels"], labels), f"{kind} selector"
    dashboards = merged["dashboards"]["namespace"] or NAMESPACE
    for o in objs:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            ns = o["metadata"].get("namespace")
            assert ns == NAMESPACE or (o["kind"] in ("Role", "RoleBinding") and ns in merged["namespaces"]) \
                or (o in dashboard_maps(objs, merged) and ns == dashboards), \
                f'{o["kind"]}/{o["metadata"]["name"]} in namespace {ns}'


def check_config(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    config = yaml.safe_load(config_map(objs)["data"]["config.yaml"])
    assert set(config) == {k for k in CONFIG_KEYS if "." not in k}, f"top-level keys {sorted(config)}"
    for path, keys in CONFIG_KEYS.items():
        node: Any = config
        for part in path.split("."):
            node = node[part]
        if keys is not None:
            assert isinstance(node, dict) and set(node) == keys, f"{path}: keys {sorted(node)} != {sorted(keys)}"
    assert isinstance(config["namespaces"], list)
    image = merged["builder"]["image"]
    assert config["builder"]["image"] == (image if isinstance(image, str) else f'{image["repository"]}:{image["tag"]}'), "builder.image"
    dep = one(objs, "Deployment")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert config["builder"]["hearthImage"] == (merged["builder"]["hearthImage"] or image), "hearthImage defaults to the controller image"
    for key in ("nodeSelector", "resources"):
        assert isinstance(config["builder"][key], dict), f"builder.{key} is a map"
    assert isinstance(config["builder"]["tolerations"], list)
    b, want = config["builder"], merged["builder"]
    assert b["imagePullSecrets"] == [s["name"] for s in want["imagePullSecrets"]], "builder.imagePullSecrets as names"
    for key in ("serviceAccountName", "automountServiceAccountToken", "podLabels", "podAnnotations",
                "priorityClassName", "runtimeClassName", "readOnlyRuntimeClassName", "proxy", "registryLogin"):
        assert b[key] == want[key], f"builder.{key}: {b[key]!r} != {want[key]!r}"
    assert config["snapshot"] == {**merged["snapshot"], "s3": merged["snapshot"]["s3"]}, "snapshot section"
    assert config["namespaces"] == merged["namespaces"]
    assert config["tekton"] == merged["tekton"], "tekton section"
    assert config["buildkitd"] == merged["buildkitd"], "buildkitd section"
    retention = merged["retention"]
    want = {k: retention.get(k) or None for k in ("ttlAfterSucceeded", "ttlAfterFailed")}
    want |= {k: retention.get(k) for k in ("succeededLimit", "failedLimit", "minAge")}
    assert config["retention"] == want, f"retention section {config['retention']} != {want} (null or \"\" is off)"
    assert isinstance(config["cache"]["maxReplicas"], int) and isinstance(config["snapshot"]["every"], int)
    assert config["cache"]["cloneStorageClasses"] == merged["cache"]["cloneStorageClasses"], "cache.cloneStorageClasses"


def check_network_policy(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    np = optional(objs, "NetworkPolicy", merged["networkPolicy"]["enabled"])
    if np is None:
        return
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = np["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["admin"], "ingress only to the admin port"
    ports = sorted(p["port"] for rule in np["spec"]["egress"] for p in rule["ports"])
    want = [53, 53, *merged["networkPolicy"]["apiServer"]["ports"]]
    store = merged["snapshot"]["store"]
    if store.startswith("s3://"):
        endpoint = merged["snapshot"]["s3"]["endpoint"]
        m = re.match(r"^(https?)://[^/:]+(?::(\d+))?", endpoint or "")
        want.append(int(m.group(2)) if m and m.group(2) else (80 if m and m.group(1) == "http" else 443))
    assert ports == sorted(want), f"egress ports {ports}, expected {sorted(want)} (DNS, API server, store)"


def check_service_monitor(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    sm = optional(objs, "ServiceMonitor", merged["serviceMonitor"]["enabled"])
    if sm is None:
        return
    # No schema for monitoring.coreos.com here: check the fields we set against what they must point at.
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    svc = one(objs, "Service")
    assert matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), "selects the metrics Service"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics", f"endpoint {ep}"
        assert re.fullmatch(r"\d+(ms|s|m|h)", ep["interval"]) and re.fullmatch(r"\d+(ms|s|m|h)", ep["scrapeTimeout"])
        assert ep.get("honorLabels") is True, "honorLabels: the namespace label of cache metrics is the build's"
    assert set(sm["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert matches(merged["serviceMonitor"]["labels"], sm["metadata"]["labels"]), "serviceMonitor.labels"


def check_notes(rendered: dict[str, str]) -> None:
    notes = [v for k, v in rendered.items() if k.endswith("NOTES.txt")]
    assert notes and "pod-security.kubernetes.io/enforce=privileged" in notes[0], "NOTES.txt tells about Pod Security"


def check_dashboards(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    maps = dashboard_maps(objs, merged)
    if not merged["dashboards"]["enabled"]:
        assert not maps, "dashboard ConfigMap rendered although dashboards.enabled is false"
        return
    assert len(maps) == 1, f"expected one dashboard ConfigMap, found {len(maps)}"
    cm = maps[0]
    assert cm["metadata"]["namespace"] == (merged["dashboards"]["namespace"] or NAMESPACE), "dashboards.namespace"
    assert matches(merged["dashboards"]["annotations"], cm["metadata"].get("annotations") or {}), "dashboards.annotations"
    files = {p.name: p for p in DASHBOARDS.glob("*.json")}
    assert files and set(cm["data"]) == set(files), f"data {sorted(cm['data'])}, files {sorted(files)}"
    uids = set()
    for name, path in files.items():
        dash = json.loads(cm["data"][name])
        assert dash == json.loads(path.read_text()), f"{name}: the ConfigMap's copy differs from the file"
        check_dashboard(dash, name)
        assert dash["uid"] not in uids, f"{name}: uid {dash['uid']} used twice"
        uids.add(dash["uid"])


def check_dashboard(dash: dict, name: str) -> None:
    """A dashboard Grafana can import anywhere: data source as a variable, unique panel ids, every
    query on that data source. (tests/dashboards.rs parses the queries.)"""
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash.get("uid", "")), f"{name}: a fixed, short uid"
    assert dash.get("id") is None, f"{name}: no database id (it belongs to the Grafana it came from)"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", f"{name}: a Prometheus data source variable"
    want = {"type": "prometheus", "uid": "${datasource}"}
    panels, ids = [], set()
    for p in dash["panels"]:
        panels += [p, *p.get("panels", [])]
    for p in panels:
        assert p["id"] not in ids, f"{name}: panel id {p['id']} used twice"
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{name}: panel {p['title']} wider than the grid"
        if p["type"] == "row":
            continue
        assert p.get("datasource") == want, f"{name}: panel {p['title']} data source {p.get('datasource')}"
        assert p.get("targets"), f"{name}: panel {p['title']} has no query"
        for t in p["targets"]:
            assert t.get("datasource", want) == want and t["expr"].strip(), f"{name}: panel {p['title']}: {t}"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == want, f"{name}: variable {v['name']} data source"


def check_prometheus_rule(objs: list[dict], values: dict) -> None:
    merged = merged_values(values)
    rule = optional(objs, "PrometheusRule", merged["alerts"]["enabled"])
    if rule is None:
        return
    # No schema for monitoring.coreos.com here: check what we set, and let promtool judge the rules.
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert matches(merged["alerts"]["labels"], rule["metadata"]["labels"]), "alerts.labels"
    assert set(rule["spec"]) == {"groups"}
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    want = ALERTS if merged["snapshot"]["store"] else ALERTS - STORE_ONLY_ALERTS
    assert sorted(names) == sorted(want), f"alerts {sorted(names)}, expected {sorted(want)}"
    anchors = runbook_anchors()
    base = merged["alerts"]["runbookBaseUrl"]
    job = merged["alerts"]["job"] or f'{one(objs, "Service")["metadata"]["name"]}'
    for r in rules:
        a = r["alert"]
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, f"{a}: keys {sorted(r)}"
        assert r["labels"]["severity"] in ("critical", "warning"), f"{a}: severity"
        assert matches(merged["alerts"]["alertLabels"], r["labels"]), f"{a}: alerts.alertLabels"
        assert set(r["annotations"]) == {"summary", "description", "runbook_url"}, f"{a}: annotations"
        url = r["annotations"]["runbook_url"]
        assert url == f"{base}#{a.lower()}", f"{a}: runbook_url {url}"
        assert a.lower() in anchors, f"{a}: docs/runbooks.md has no section '## {a}'"
        assert f'job="{job}"' in r["expr"], f"{a}: expr does not select job {job}"
    promtool_check_rules({"groups": rule["spec"]["groups"]})


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the headings of docs/runbooks.md."""
    heads = re.findall(r"(?m)^#{1,6} +(.+?) *$", RUNBOOKS.read_text())
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def promtool(*args: str) -> str:
    assert PROMTOOL, "promtool not installed"
    out = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"
    return out.stdout


def promtool_check_rules(rules: dict) -> None:
    if not PROMTOOL:
        return  # said once in main
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(yaml.safe_dump(rules))
        f.flush()
        promtool("check", "rules", f.name)


# ---------------------------------------------------------------- repository-level checks

def install_manifest() -> str:
    rendered = render({})
    docs = rendered_docs(rendered)
    order = {k: i for i, k in enumerate(INSTALL_ORDER)}
    docs.sort(key=lambda d: (order.get(d[2]["kind"], len(order)), d[2]["metadata"].get("namespace", ""), d[2]["metadata"]["name"]))
    version = helm.Chart.load(str(CHART)).metadata["version"]
    header = (
        f"# Hearth, installed without Helm: the chart charts/hearth {version} rendered with its default\n"
        f"# values, release \"{RELEASE}\", namespace \"{NAMESPACE}\".\n"
        "#   kubectl apply -f crds/ -f config/install.yaml\n"
        "# Generated by `.ci/test-chart --update`; do not edit (the check fails when it is stale).\n"
        "# Snapshots are off with these defaults: see docs/install.md to set a store.\n"
    )
    namespace = (
        "# The controller's namespace. Its pods are Pod Security \"restricted\"; builds run in other\n"
        "# namespaces (see docs/install.md).\n"
        "apiVersion: v1\nkind: Namespace\nmetadata:\n"
        f"  name: {NAMESPACE}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n"
    )
    parts = [header + "---\n" + namespace]
    for template, text, _ in docs:
        parts.append(f"# Source: {template}\n{text}\n")
    return "---\n".join(parts)


def check_install(update: bool) -> None:
    want = install_manifest()
    if update:
        INSTALL.write_text(want)
    assert INSTALL.exists(), f"{INSTALL.relative_to(ROOT)} missing: run .ci/test-chart --update"
    assert INSTALL.read_text() == want, f"{INSTALL.relative_to(ROOT)} is stale: run .ci/test-chart --update"
    objs = [o for o in yaml.safe_load_all(want) if o]
    assert objs[0]["kind"] == "Namespace"
    for o in objs:
        for kv in KUBE_VERSIONS:
            kubernetes_validate.validate(o, kv, strict=True)


def check_crds(update: bool) -> None:
    if update:
        CRDS_COPY.write_bytes(CRDS_SRC.read_bytes())
    assert CRDS_COPY.exists() and CRDS_COPY.read_bytes() == CRDS_SRC.read_bytes(), \
        "charts/hearth/crds/hearth.dev.yaml differs from crds/hearth.dev.yaml: run .ci/test-chart --update"
    extra = sorted(p.name for p in CRDS_COPY.parent.iterdir() if p != CRDS_COPY)
    assert not extra, f"unexpected files in charts/hearth/crds: {extra}"
    with helm.Chart.load(str(CHART)) as chart:
        names = [c["filename"] for c in chart.crds]
    assert [n.split("/", 1)[-1] for n in names] == ["crds/hearth.dev.yaml"], f"helm sees CRDs {names}"
    crds = [d for d in yaml.safe_load_all(CRDS_SRC.read_text()) if d]
    kinds = sorted(d["spec"]["names"]["kind"] for d in crds)
    assert kinds == ["BuildCache", "ImageBuild"], f"CRDs {kinds}"
    for d in crds:
        for kv in KUBE_VERSIONS:
            kubernetes_validate.validate(d, kv, strict=True)


class _Block(str):
    """A string dumped as a YAML literal block (multi-line PromQL stays readable)."""


def _dumper() -> type:
    class Dumper(yaml.SafeDumper):
        pass
    Dumper.add_representer(_Block, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))
    return Dumper


def rules_file() -> str:
    rule = one([d[2] for d in rendered_docs(render(RULES_VALUES))], "PrometheusRule")
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            if "\n" in r["expr"]:
                r["expr"] = _Block(r["expr"])
    header = (
        "# Hearth's alerts for a Prometheus without the Prometheus Operator (rule_files), and what\n"
        "# promtool's tests in charts/hearth/tests/alerts.test.yaml run against. The chart's\n"
        "# PrometheusRule rendered with alerts.enabled=true, a snapshot store and default thresholds,\n"
        "# for metrics scraped with job=\"hearth-metrics\" and honor_labels: true.\n"
        "# Generated by `.ci/test-chart --update`; do not edit (the check fails when it is stale).\n"
    )
    return header + yaml.dump({"groups": rule["spec"]["groups"]}, Dumper=_dumper(), sort_keys=False, width=1000)


def check_rules_file(update: bool) -> None:
    want = rules_file()
    if update:
        RULES.parent.mkdir(parents=True, exist_ok=True)
        RULES.write_text(want)
    assert RULES.exists(), f"{RULES.relative_to(ROOT)} missing: run .ci/test-chart --update"
    assert RULES.read_text() == want, f"{RULES.relative_to(ROOT)} is stale: run .ci/test-chart --update"
    promtool("check", "rules", str(RULES))


def check_alert_tests() -> None:
    """promtool's unit tests pass, and each alert is expected firing somewhere and not firing somewhere."""
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert [str((RULES_TEST.parent / f).resolve()) for f in tests["rule_files"]] == [str(RULES)], \
        f"{RULES_TEST.name} must test {RULES.relative_to(ROOT)}"
    fires, quiet = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires >= ALERTS, f"alerts never tested firing: {sorted(ALERTS - fires)}"
    assert quiet >= ALERTS, f"alerts never tested not firing: {sorted(ALERTS - quiet)}"
    out = promtool("test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out, out


def check_invalid_values(values: dict, word: str) -> None:
    try:
        render(values)
    except helm.HelmError as e:
        assert word in str(e), f"refused, but the message does not name {word}: {e}"
    else:
        raise AssertionError(f"values {values} rendered; they must be refused")


def check_values_documented() -> None:
    """Every value in values.yaml that the schema describes as a leaf has a comment right above it."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaf(path: list[str]) -> bool | None:
        node = schema
        for part in path:
            node = node.get("properties", {}).get(part)
            if node is None:
                return None  # inside a value's default content (e.g. resources.requests)
        return "properties" not in node

    undocumented, stack = [], []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if leaf(stack) and not lines[i - 1].lstrip().startswith("#"):
            undocumented.append(".".join(stack))
    assert not undocumented, f"values without a comment in values.yaml: {undocumented}"
    defined = set(schema["properties"])
    with helm.Chart.load(str(CHART)) as chart:
        assert set(chart.values) == defined, f"values.yaml and values.schema.json differ: {set(chart.values) ^ defined}"


def check_install_doc() -> None:
    """Every values snippet in docs/install.md renders (so the doc cannot drift from the chart),
    and every repository path its commands name exists."""
    text = INSTALL_DOC.read_text()
    with helm.Chart.load(str(CHART)) as chart:
        keys = set(chart.values)
    snippets = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    values = [v for v in snippets if isinstance(v, dict) and set(v) <= keys]
    assert len(values) >= 5, f"expected the values snippets of docs/install.md, found {len(values)}"
    for v in values:
        if v.get("snapshot", {}).get("store", "").startswith("file://"):
            assert v["snapshot"].get("fileStoreClaim"), "file store snippet without fileStoreClaim"
        render(v)
    for path in sorted(set(re.findall(r"(?:^|\s)((?:crds|charts|config|e2e|docs)/[\w./-]*)", text, re.M))):
        assert (ROOT / path.rstrip(".")).exists(), f"docs/install.md names {path}, which does not exist"


def check_the_checks() -> None:
    """The checks catch what they are for: mutate a good render and expect each to fail."""
    docs = rendered_docs(render({}))
    objs = [d[2] for d in docs]

    def must_fail(what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError:
            return
        raise AssertionError(f"the check did not catch {what}")

    role = next(i for i, d in enumerate(docs) if d[2]["kind"] == "ClusterRole")
    no_why = [*docs]
    no_why[role] = (docs[role][0], docs[role][1].replace("# why:", "# ", 1), docs[role][2])
    must_fail("a rule without '# why:'", lambda: check_rbac_why(no_why))
    more = copy.deepcopy(objs)
    next(o for o in more if o["kind"] == "ClusterRole")["rules"].append(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    must_fail("a rule on secrets", lambda: check_rbac(more, {}))
    less = copy.deepcopy(objs)
    next(o for o in less if o["kind"] == "ClusterRole")["rules"].pop()
    must_fail("a missing permission", lambda: check_rbac(less, {}))
    wider = copy.deepcopy(objs)
    next(o for o in wider if o["metadata"]["name"].endswith("-view"))["rules"][0]["verbs"].append("delete")
    must_fail("a view role that may delete", lambda: check_user_roles(wider, {}))
    must_fail("user roles missing", lambda: check_user_roles([o for o in objs if not o["metadata"]["name"].endswith("-edit")], {}))
    must_fail("an extra kind", lambda: check_kinds(objs + [{"kind": "Secret", "metadata": {"name": "x"}}]))
    bad = copy.deepcopy(objs)
    next(o for o in bad if o["kind"] == "Deployment")["spec"]["replicas"] = "two"
    must_fail("a schema violation", lambda: check_schemas(bad))
    unknown = copy.deepcopy(objs)
    next(o for o in unknown if o["kind"] == "Service")["spec"]["selectr"] = {}
    must_fail("an unknown field", lambda: check_schemas(unknown))
    root = copy.deepcopy(objs)
    next(o for o in root if o["kind"] == "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    must_fail("a root controller", lambda: check_deployment(root, {}))
    on = {"alerts": {"enabled": True}, "dashboards": {"enabled": True}}
    objs = [d[2] for d in rendered_docs(render(on))]
    no_runbook = copy.deepcopy(objs)
    del one(no_runbook, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["annotations"]["runbook_url"]
    must_fail("an alert without a runbook", lambda: check_prometheus_rule(no_runbook, on))
    must_fail("rules switched on but missing", lambda: check_prometheus_rule(
        [o for o in objs if o["kind"] != "PrometheusRule"], on))
    must_fail("a dashboard switched off but rendered", lambda: check_dashboards(objs, {}))
    dash = json.loads((DASHBOARDS / "hearth.json").read_text())
    next(p for p in dash["panels"] if p["type"] != "row")["datasource"] = {"type": "prometheus", "uid": "prom"}
    must_fail("a dashboard panel on a fixed data source", lambda: check_dashboard(dash, "hearth.json"))


def main() -> int:
    update = "--update" in sys.argv[1:]
    checks = Checks()
    checks.check("the checks catch what they are for", check_the_checks)
    checks.check("values.yaml: every value documented, all in values.schema.json", check_values_documented)
    checks.check("docs/install.md: its values snippets render, the paths it names exist", check_install_doc)
    checks.check("crds: chart copy identical to crds/, valid CRDs", lambda: check_crds(update))
    for name, values in VARIANTS.items():
        def run(name: str = name, values: dict = values) -> None:
            rendered = render(values)
            docs = rendered_docs(rendered)
            objs = [d[2] for d in docs]
            sub = [
                ("lint", lambda: check_lint(values)),
                ("kinds", lambda: check_kinds(objs)),
                ("schemas", lambda: check_schemas(objs)),
                ("rbac-why", lambda: check_rbac_why(docs)),
                ("rbac", lambda: check_rbac(objs, values)),
                ("user-roles", lambda: check_user_roles(objs, values)),
                ("deployment", lambda: check_deployment(objs, values)),
                ("config", lambda: check_config(objs, values)),
                ("networkpolicy", lambda: check_network_policy(objs, values)),
                ("servicemonitor", lambda: check_service_monitor(objs, values)),
                ("notes", lambda: check_notes(rendered)),
                ("dashboards", lambda: check_dashboards(objs, values)),
                ("prometheusrule", lambda: check_prometheus_rule(objs, values)),
            ]
            for sub_name, fn in sub:
                checks.check(f"{name}: {sub_name}", fn)
        try:
            run()
        except Exception as e:
            checks.failed.append(f"{name}: render")
            print(f"FAIL {name}: render: {type(e).__name__}: {e}")
    for values, word in INVALID_VALUES:
        checks.check(f"refuses {values}", lambda v=values, w=word: check_invalid_values(v, w))
    checks.check("config/install.yaml is the default render", lambda: check_install(update))
    if PROMTOOL:
        checks.check("config/prometheus/hearth-rules.yaml is the rules' render; promtool check rules",
                     lambda: check_rules_file(update))
        checks.check("promtool test rules: every alert firing and not firing", check_alert_tests)
    else:
        print("skip promtool checks: promtool not installed (apt-get install prometheus)")
    print(f"chart: {checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
