"""deploy/k8s: every manifest validates against a recent Kubernetes API schema (offline, with the
schemas bundled in kubernetes-validate), and the settings that keep a rollout or a drain from
dropping requests hold together."""

import pytest

from conftest import ROOT

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
import yaml  # noqa: E402  (kubernetes-validate's own dependency)

K8S = ROOT / "deploy" / "k8s"


def _docs() -> dict[str, dict]:
    """Every manifest by "Kind/name" (two Deployments, two claims), and the kustomization by its kind."""
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                key = doc["kind"] if doc["kind"] == "Kustomization" else f"{doc['kind']}/{doc['metadata']['name']}"
                assert key not in out, f"{key} twice"
                out[key] = doc
    return out


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container["env"]}


def _claims(pod: dict, container: dict) -> dict[str, str]:
    """mount path -> the claim mounted there (persistentVolumeClaim volumes only)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]]["persistentVolumeClaim"]["claimName"] for m in container["volumeMounts"]
            if "persistentVolumeClaim" in volumes[m["name"]]}


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
    assert {"Deployment/charrnn", "Deployment/charrnn-trainer", "Service/charrnn", "HorizontalPodAutoscaler/charrnn",
            "PodDisruptionBudget/charrnn", "PersistentVolumeClaim/charrnn-models",
            "PersistentVolumeClaim/charrnn-data"} <= set(docs)
    for kind, doc in docs.items():
        if doc["apiVersion"].startswith("kustomize.config.k8s.io"):
            assert set(doc["resources"]) == {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
            continue
        kv.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_a_bad_manifest_is_rejected():
    # the validator really checks (a misspelt field under strict mode, a wrong type)
    dep = _docs()["Deployment/charrnn"]
    bad = {**dep, "spec": {**dep["spec"], "replica": 2}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)
    bad = {**dep, "spec": {**dep["spec"], "replicas": "two"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_drain_and_probes_fit_together():
    docs = _docs()
    pod = docs["Deployment/charrnn"]["spec"]["template"]
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
    assert docs["Service/charrnn"]["spec"]["selector"] == labels
    assert docs["PodDisruptionBudget/charrnn"]["spec"]["selector"]["matchLabels"] == labels
    hpa = docs["HorizontalPodAutoscaler/charrnn"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment/charrnn"]["metadata"]["name"]
    assert docs["PodDisruptionBudget/charrnn"]["spec"]["minAvailable"] < hpa["minReplicas"]
    metrics = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert metrics == {"charrnn_queue_depth"}
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["as"] == "charrnn_queue_depth"
    # torch threads per pod = the cores it requests
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["CHARRNN_TORCH_THREADS"] == str(c["resources"]["requests"]["cpu"])


def test_every_replica_mounts_the_shared_models_claim():
    docs = _docs()
    pod = docs["Deployment/charrnn"]["spec"]["template"]["spec"]
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
    pvc = docs["PersistentVolumeClaim/charrnn-models"]
    assert volumes[models[0]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # ... writable by the image's user (uid 10001): the pod runs as it, the volume gets its group
    sc = pod["securityContext"]
    assert sc["runAsUser"] == 10001 and sc["fsGroup"] == sc["runAsGroup"] == 10001


def test_replicas_share_the_data_claim_and_start_no_trainer():
    docs = _docs()
    pod = docs["Deployment/charrnn"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = _env(c)
    # uploads and the jobs database on a claim of their own, mounted where CHARRNN_DATA_DIR says
    assert env["CHARRNN_DATA_DIR"] == "/data"
    assert _claims(pod, c)[env["CHARRNN_DATA_DIR"]] == "charrnn-data"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/data")
    assert not mount.get("readOnly", False) and "subPath" not in mount
    # the trainer is its own Deployment, not a child of each replica's gunicorn
    assert env["CHARRNN_TRAINER"] == "off"
    pvc = docs["PersistentVolumeClaim/charrnn-data"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # (SQLite over a network filesystem: the claim says what it needs)
    text = (K8S / "pvc.yaml").read_text()
    assert "NFSv4" in text and "ReadWriteOnce" in text and "WAL" in text
    # ... and the pod affinity it shows (every replica on the trainer's node) is a valid pod spec field
    lines = text.splitlines()
    start = lines.index("#   affinity:")
    snippet = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        snippet.append(line[4:])
    affinity = yaml.safe_load("\n".join(snippet))["affinity"]
    term = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    trainer = docs["Deployment/charrnn-trainer"]["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= trainer.items()
    dep = docs["Deployment/charrnn"]
    pinned = {**dep, "spec": {**dep["spec"], "template": {**dep["spec"]["template"],
                                                          "spec": {**pod, "affinity": affinity}}}}
    kv.validate(pinned, kv.latest_version(), strict=True)


def test_one_trainer_runs_the_jobs_on_the_replicas_claims():
    docs = _docs()
    dep = docs["Deployment/charrnn-trainer"]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # never two runners at once
    assert docs["HorizontalPodAutoscaler/charrnn"]["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "jobs.runner"]
    assert c["image"] == docs["Deployment/charrnn"]["spec"]["template"]["spec"]["containers"][0]["image"]
    # the same two claims as the replicas, at the same paths, named the same way in its environment
    replicas = docs["Deployment/charrnn"]["spec"]["template"]["spec"]
    rc = replicas["containers"][0]
    assert _claims(pod, c) == _claims(replicas, rc) == {"/models": "charrnn-models", "/data": "charrnn-data"}
    env, renv = _env(c), _env(rc)
    for k in ("CHARRNN_MODELS_DIR", "CHARRNN_DATA_DIR",
              "CHARRNN_MAX_JOBS", "CHARRNN_TRAIN_THREADS"):  # (the replicas' /info reports the last two)
        assert env[k] == renv[k]
    assert "CHARRNN_WEIGHTS" not in env  # the image's default model, as the replicas serve it: a base a job may name
    # modest, and sized to what it runs: jobs x threads = the cores it requests
    res = c["resources"]
    assert int(env["CHARRNN_MAX_JOBS"]) * int(env["CHARRNN_TRAIN_THREADS"]) == int(res["requests"]["cpu"])
    assert "memory" in res["limits"] and "cpu" not in res.get("limits", {})
    # the image's user, writable claims, the runner's 30 s of checkpointing after SIGTERM
    sc = pod["securityContext"]
    assert sc["runAsUser"] == sc["runAsGroup"] == sc["fsGroup"] == 10001 and sc["runAsNonRoot"]
    assert pod["terminationGracePeriodSeconds"] > 30
    assert c["securityContext"]["readOnlyRootFilesystem"] and "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    # no Service, PDB or HPA counts it among the serving pods
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for sel in (docs["Service/charrnn"]["spec"]["selector"],
                docs["PodDisruptionBudget/charrnn"]["spec"]["selector"]["matchLabels"]):
        assert not sel.items() <= labels.items()
    assert not any(d["kind"] == "Service" and d["spec"]["selector"].items() <= labels.items() for d in docs.values()
                   if d["kind"] != "Kustomization")


@pytest.mark.parametrize("probe", ["livenessProbe", "startupProbe"])
def test_the_trainers_probes_read_its_heartbeat(tmp_path, probe):
    """The probe's own command, run against a heartbeat file here: fresh -> 0; stale or missing -> not 0."""
    import os
    import subprocess
    import sys
    import time

    c = _docs()["Deployment/charrnn-trainer"]["spec"]["template"]["spec"]["containers"][0]
    p = c[probe]
    cmd = p["exec"]["command"]
    assert cmd[:2] == ["python", "-c"] and len(cmd) == 3
    beat = f"{_env(c)['CHARRNN_DATA_DIR']}/runner.heartbeat"  # where jobs/runner.py touches it
    assert beat in cmd[2] and '"runner.heartbeat"' in (ROOT / "jobs" / "runner.py").read_text()
    code = cmd[2].replace(beat, str(tmp_path / "runner.heartbeat"))

    def rc() -> int:
        return subprocess.run([sys.executable, "-c", code], timeout=30).returncode

    assert rc() != 0                                   # no heartbeat yet
    (tmp_path / "runner.heartbeat").touch()
    assert rc() == 0                                   # fresh
    old = time.time() - 120
    os.utime(tmp_path / "runner.heartbeat", (old, old))
    assert rc() != 0                                   # a runner silent for 2 minutes
    assert p["timeoutSeconds"] >= 2                    # a python start, without torch
    if probe == "livenessProbe":                       # a stuck runner is restarted within ~a minute
        assert p["periodSeconds"] * p["failureThreshold"] <= 60
