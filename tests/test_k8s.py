"""deploy/k8s: every manifest validates against a recent Kubernetes API schema (offline, with the
schemas bundled in kubernetes-validate), and the settings that keep a rollout or a drain from
dropping requests hold together."""
from pathlib import Path

import pytest

from conftest import ROOT

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
import yaml  # noqa: E402  (kubernetes-validate's own dependency)

K8S = ROOT / "deploy" / "k8s"


def _docs() -> dict[str, dict]:
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


def _gunicorn_graceful_timeout() -> int:
    ns: dict = {}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), ns)
    return ns["graceful_timeout"]


def test_manifests_validate_against_a_recent_kubernetes():
    version = kv.latest_version()
    try:
        kv.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {}}, version, True)
    except kv.SchemaNotFoundError:  # a wheel without its bundled schemas
        pytest.skip(f"kubernetes-validate has no schemas for {version} offline")
    docs = _docs()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "PersistentVolumeClaim"} <= set(docs)
    for kind, doc in docs.items():
        if doc["apiVersion"].startswith("kustomize.config.k8s.io"):
            assert set(doc["resources"]) == {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
            continue
        kv.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_a_bad_manifest_is_rejected():
    # the validator really checks (a misspelt field under strict mode, a wrong type)
    dep = _docs()["Deployment"]
    bad = {**dep, "spec": {**dep["spec"], "replica": 2}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)
    bad = {**dep, "spec": {**dep["spec"], "replicas": "two"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_drain_and_probes_fit_together():
    docs = _docs()
    pod = docs["Deployment"]["spec"]["template"]
    c = pod["spec"]["containers"][0]
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pause + _gunicorn_graceful_timeout()
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(c["ports"][0]["containerPort"])
    # the service, the PDB and the HPA all point at these pods
    labels = pod["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"] == labels
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]
    metrics = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert metrics == {"charrnn_queue_depth"}
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["as"] == "charrnn_queue_depth"
    # torch threads per pod = the cores it requests
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["CHARRNN_TORCH_THREADS"] == str(c["resources"]["requests"]["cpu"])


def test_every_replica_mounts_the_shared_models_claim():
    docs = _docs()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the server reads its models from where the claim is mounted, read-write (a model can be added
    # through any replica; the trainer, later, writes there too)
    assert env["CHARRNN_MODELS_DIR"] == "/models"
    models = [name for name, m in mounts.items() if m["mountPath"] == env["CHARRNN_MODELS_DIR"]]
    assert len(models) == 1
    mount = mounts[models[0]]
    assert not mount.get("readOnly", False) and "subPath" not in mount
    # the shipped model stays the image's default: not overridden here
    assert "CHARRNN_WEIGHTS" not in env
    # ... a claim of this kustomization, shared by every replica: ReadWriteMany
    pvc = docs["PersistentVolumeClaim"]
    assert volumes[models[0]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # ... writable by the image's user (uid 10001): the pod runs as it, the volume gets its group
    sc = pod["securityContext"]
    assert sc["runAsUser"] == 10001 and sc["fsGroup"] == sc["runAsGroup"] == 10001
