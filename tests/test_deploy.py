"""Deployment: the image (deploy/Containerfile), HAProxy in front of replicas (deploy/haproxy.cfg) and the Kubernetes
manifests (deploy/k8s/).

Without podman: the files say what they must (a non-root USER, a HEALTHCHECK on /readyz, the balancer's retries and
health checks, probes, limits and a non-root securityContext), the build context lets in what the image copies,
requirements-serve.txt pins what requirements.txt pins, and benchmarks/deploy_load.py reads HAProxy's stats.

Marked `container` (make deploy-test; `make test` leaves them out): the image built from the tiny models answers
/readyz, a completion and a classification through the official openai client, as a non-root user; and two
replicas behind haproxy lose no request when one is killed halfway through a load test.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.deploy_load import deltas, parse_stats
from lifecycle.net import free_port
from tests.conftest import stage_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def manifests() -> dict[str, dict]:
    docs = [d for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return {d["kind"]: d for d in docs}


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[=\[]", line)[0].lower(): line.split("==")[1] for line in lines if "==" in line}


def runtime_stage(text: str) -> str:
    return text.split("\nFROM ")[-1]


# ---------------------------------------------------------------- the files, without podman

def test_the_image_runs_as_a_non_root_user_with_a_readyz_health_check():
    final = runtime_stage((DEPLOY / "Containerfile").read_text())
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/readyz", final, re.M)
    assert re.search(r"^ARG VARIANT=int8_dynamic$", final, re.M)


def test_the_runtime_stage_copies_only_the_chosen_variant_and_what_serving_reads():
    final = runtime_stage((DEPLOY / "Containerfile").read_text())
    sources = [line.split()[-2] for line in final.splitlines() if line.startswith("COPY") and "--from" not in line]
    assert sorted(sources) == [".image/models", "lifecycle", "params.yaml"]  # build_image.sh stages the variant


def test_the_build_context_lets_in_every_path_the_containerfile_copies_and_nothing_else():
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    copied = [line.split()[-2] for line in (DEPLOY / "Containerfile").read_text().splitlines()
              if line.startswith("COPY") and "--from" not in line]
    assert copied and all(any(src == a or src.startswith(a + "/") for a in allowed) for src in copied)
    assert not {"data", "models", ".venv", ".git"} & allowed


def test_building_without_models_says_how_to_get_them(tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    result = subprocess.run(["bash", "deploy/build_image.sh"], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, VARIANT="onnx_fp32"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "build_image: models/compressed/lm/onnx_fp32/model.onnx not found: run `make repro` (or `dvc pull`) first"]


def fake_variants(root: Path, tag: str = "") -> None:
    for kind in ("lm", "classifier"):
        for variant in ("int8_dynamic", "onnx_fp32"):
            (root / "compressed" / kind / variant).mkdir(parents=True)
            (root / "compressed" / kind / variant / "model.onnx").write_text(f"{kind} {variant} {tag}")
            (root / "compressed" / kind / variant / "tokenizer.json").write_text("{}")


def dry_run(project: Path, **env: str) -> list[str]:
    result = subprocess.run(["bash", "deploy/build_image.sh", "--dry-run"], cwd=project, capture_output=True,
                            text=True, env=dict(stage_env(), PYTHONPATH=str(ROOT), **env))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


VARIANT_FILES = ["compressed/classifier/int8_dynamic/model.onnx", "compressed/classifier/int8_dynamic/tokenizer.json",
                 "compressed/lm/int8_dynamic/model.onnx", "compressed/lm/int8_dynamic/tokenizer.json"]


def test_the_build_context_holds_the_working_trees_variant_hard_linked_and_nothing_stale(tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    fake_variants(tmp_path / "models")
    (tmp_path / ".image/models/compressed/lm/old").mkdir(parents=True)  # a previous build's variant
    (tmp_path / ".image/models/REGISTRY.json").write_text("{}")
    lines = dry_run(tmp_path)
    assert lines[0].startswith("build_image: would build llm-lifecycle-serve:int8_dynamic (variant int8_dynamic)")
    assert lines[1:] == VARIANT_FILES
    staged, source = (tmp_path / p / "compressed/lm/int8_dynamic/model.onnx" for p in (".image/models", "models"))
    assert staged.stat().st_ino == source.stat().st_ino


def test_a_registry_reference_stages_that_version_and_names_it_in_the_tags(tmp_path):
    """MODEL_REF=compressed@prod: the version prod holds now, with its REGISTRY.json; a promotion changes it."""
    from lifecycle import registry
    from tests.conftest import dvc, git
    repo = tmp_path / "registry"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        git(tmp_path, "init", "-q", "-b", "main", str(repo))
        dvc(repo, "init", "-q")
        dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
        (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": {"compressed": {"path": "models/compressed"}}}))
        for version in ("v0.1.0", "v0.2.0"):
            shutil.rmtree(repo / "models", ignore_errors=True)
            fake_variants(repo / "models", version)
            dvc(repo, "add", "-q", "models/compressed")
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", version)
            dvc(repo, "push", "-q")
            registry.register("compressed", version, repo)
        project = tmp_path / "project"
        shutil.copytree(DEPLOY, project / "deploy")
        for version in ("v0.1.0", "v0.2.0"):
            registry.promote("compressed", version, "prod", repo)
            lines = dry_run(project, MODEL_REF="compressed@prod", REGISTRY_REPO=str(repo), IMAGE="serve:int8")
            assert f"would build serve:int8 and serve:int8-{version} (variant int8_dynamic, compressed@prod = " \
                   f"{version})" in lines[1]
            assert lines[2:] == ["REGISTRY.json", *VARIANT_FILES]
            staged = project / ".image/models"
            assert (staged / "compressed/lm/int8_dynamic/model.onnx").read_text() == f"lm int8_dynamic {version}"
            record = json.loads((staged / "REGISTRY.json").read_text())
            assert (record["version"], record["stage"]) == (version, "prod")
            assert (staged / "REGISTRY.json").stat().st_mode & 0o004  # the image's non-root user reads it


def test_requirements_serve_pins_what_requirements_pins():
    serve, full = pins(ROOT / "requirements-serve.txt"), pins(ROOT / "requirements.txt")
    assert {"torch", "onnxruntime", "fastapi", "uvicorn"} <= set(serve)
    assert {name: serve[name] for name in serve} == {name: full.get(name) for name in serve}


def test_the_balancer_checks_readyz_and_retries_a_failed_replica_on_another():
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    settings = [line.split("#")[0].split() for line in cfg.splitlines()]
    retry_on = next(words[1:] for words in settings if words[:1] == ["retry-on"])
    assert {"conn-failure", "empty-response", "response-timeout", "all-retryable-errors"} <= set(retry_on)
    assert any(words[:2] == ["option", "redispatch"] for words in settings)
    assert any(words[:1] == ["retries"] and int(words[1]) >= 1 for words in settings)
    assert ["option", "httpchk", "GET", "/readyz"] in settings
    servers = [words for words in settings if words[:1] == ["server"]]
    assert len(servers) >= 2 and len({w[2] for w in servers}) == len(servers)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)")
def test_haproxy_accepts_the_configuration():
    result = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_has_probes_limits_and_a_non_root_security_context():
    deployment = manifests()["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    container = pod["containers"][0]
    ports = {p["containerPort"] for p in container["ports"]} | {p["name"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert all(container[probe]["httpGet"]["port"] in ports for probe in ("readinessProbe", "livenessProbe"))
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_service_and_autoscaler_point_at_the_deployment():
    found = manifests()
    deployment, service, hpa = found["Deployment"], found["Service"], found["HorizontalPodAutoscaler"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


STATS_CSV = """# pxname,svname,qcur,scur,stot,econ,eresp,wretr,wredis,status,hrsp_2xx,hrsp_5xx,
api,FRONTEND,0,0,9,,,,,OPEN,9,0,
replicas,replica1,0,{scur1},5,0,{eresp},{wretr1},{wredis1},{status},{ok1},0,
replicas,replica2,0,0,4,0,0,0,0,UP,{ok2},0,
replicas,BACKEND,0,0,9,0,{eresp},{wretr},{wredis},UP,{ok},0,
"""


def stats_text(ok1, ok2, retries=0, status="UP", eresp=0, scur1=0):
    return STATS_CSV.format(scur1=scur1, eresp=eresp, wretr1=retries, wredis1=retries, status=status, ok1=ok1,
                            ok2=ok2, wretr=retries, wredis=retries, ok=ok1 + ok2)


def test_parse_stats_keeps_the_backends_servers_and_totals():
    rows = parse_stats(stats_text(3, 4, scur1=2))
    assert set(rows) == {"replica1", "replica2", "BACKEND"}
    assert rows["replica1"]["scur"] == "2" and rows["BACKEND"]["hrsp_2xx"] == "7"


def test_deltas_count_each_replicas_answers_and_the_retries_over_the_load():
    before = parse_stats(stats_text(3, 4))
    after = parse_stats(stats_text(10, 30, retries=2, status="DOWN", eresp=2))
    counts = deltas(before, after)
    assert counts["replica1"]["answered_2xx"] == 7 and counts["replica2"]["answered_2xx"] == 26
    assert counts["BACKEND"]["answered_2xx"] == 33 and counts["BACKEND"]["retries"] == 2
    assert counts["replica1"]["response_errors"] == 2 and counts["replica1"]["status"] == "DOWN"


# ---------------------------------------------------------------- with podman (make deploy-test)

def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(DEPLOY / "containers.conf"))
    result = subprocess.run(["podman", "--runtime", "runc", *args], env=env, capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def tiny_image(tiny_compressed, tmp_path_factory):
    """The image of `make image`, built from the tiny models (deploy/build_image.sh in a copy of the project):
    (its name, the project)."""
    assert shutil.which("podman"), "podman not installed: apt-get install podman runc debootstrap haproxy"
    project = tmp_path_factory.mktemp("deploy") / "project"
    shutil.copytree(tiny_compressed, project)
    for name in ("deploy", "lifecycle", "benchmarks", "requirements-serve.txt", ".dockerignore"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, project / name, **({"dirs_exist_ok": True} if copy is shutil.copytree else {}))
    image = "llm-lifecycle-serve:test"
    env = dict(stage_env(), IMAGE=image, VARIANT="int8_dynamic")
    result = subprocess.run(["deploy/build_image.sh"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return image, project


@pytest.fixture(scope="module")
def served(tiny_image):
    """One container of the image on a free port of the host's network: (base URL, container name)."""
    image, _ = tiny_image
    port, name = free_port(), f"llm-test-{os.getpid()}"
    podman("run", "-d", "--name", name, "--network=host", "-e", f"PORT={port}", image)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, name)
        yield base, name
    finally:
        podman("rm", "-f", "-t", "1", name, check=False)


def wait_ready(base: str, name: str, timeout: float = 180) -> None:
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(1)
    pytest.fail(f"{name} not ready after {timeout} s: {podman('logs', name, check=False).stderr[-2000:]}")


@pytest.mark.container
def test_the_image_size_is_recorded(tiny_image):
    _, project = tiny_image
    report = json.loads((project / "reports/bench/image.json").read_text())
    assert report["variant"] == "int8_dynamic" and 0 < report["base_mb"] < report["size_mb"]
    assert 0 < report["torch_mb"] < report["python_packages_mb"]


@pytest.mark.container
def test_the_container_answers_the_openai_client(served):
    import openai
    base, _ = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="llm-lifecycle", prompt="The", max_tokens=4, temperature=0)
    assert completion.choices[0].finish_reason in ("length", "stop") and completion.usage.completion_tokens >= 1
    classified = client.post("/classify", body={"input": "a fine day"}, cast_to=object)
    assert classified["data"][0]["label"] in classified["data"][0]["scores"]


@pytest.mark.container
def test_the_container_runs_as_a_non_root_user_and_its_health_check_passes(served):
    _, name = served
    assert podman("exec", name, "id", "-u").stdout.strip() not in ("", "0")
    assert podman("healthcheck", "run", name, check=False).returncode == 0


@pytest.mark.container
def test_a_replica_killed_under_load_costs_no_request(tiny_image):
    """deploy/run_replicas.sh (2 replicas on :8001-8002, haproxy on :8000: those ports must be free) under
    benchmarks/deploy_load.py's 16 clients; replica 1 is killed halfway."""
    image, project = tiny_image
    env = dict(stage_env(), IMAGE=image)
    result = subprocess.run([sys.executable, "-m", "benchmarks.deploy_load", "--requests", "400",
                             "--prompt-words", "6"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((project / "reports/bench/deploy.json").read_text())
    assert report["requests"] == 400 and report["failed"] == 0
    assert report["every_replica_served"] and report["replicas"]["replica1"]["status"].startswith("DOWN")
    assert report["openai_client"]["classification"]
