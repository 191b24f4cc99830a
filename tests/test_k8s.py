"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate, which
ships them: no network, no cluster), every container's `search ...` command accepted by our
CLI without running it, no Secret value in a manifest, and the worker Job as README's
"Scaling out" describes it."""
import json
import re
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# A recent release, and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.33", kubernetes_validate.latest_version().rsplit(".", 1)[0])
SECRET_EXAMPLE = "secret.example.yaml"
IMAGE = "bloodsearch"  # the Dockerfile's image, whatever its registry and tag
URL_ENV = ("SEARCH_STORAGE", "SEARCH_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "POSTGRES_PASSWORD")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def resources(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_resources(include_example: bool = False) -> list[tuple[str, dict]]:
    return [(p.name, r) for p in manifest_files() if include_example or p.name != SECRET_EXAMPLE
            for r in resources(p)]


def by_kind(kind: str, name: str) -> dict:
    found = [r for _, r in all_resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs() -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload."""
    return [(f"{r['kind']}/{r['metadata']['name']}", r["spec"]["template"]["spec"])
            for _, r in all_resources() if r["kind"] in ("Job", "Deployment", "StatefulSet", "DaemonSet")]


def containers() -> list[tuple[str, dict, dict]]:
    return [(f"{where}/{c['name']}", c, spec) for where, spec in pod_specs()
            for c in spec.get("containers", []) + spec.get("initContainers", [])]


def test_there_are_manifests():
    names = {p.name for p in manifest_files()}
    assert {"worker-job.yaml", "study-job.yaml", "mlflow.yaml", "postgres.yaml", SECRET_EXAMPLE} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path, version):
    docs = resources(path)
    assert docs, f"{path.name} holds no resource"
    for resource in docs:
        try:
            validated = kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {resource['kind']}/{resource['metadata']['name']} at {where}: {exc.message}")
        assert validated == version  # checked against that release's schemas, not an older one


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifest_files()} - {SECRET_EXAMPLE}
    assert (K8S / "README.md").is_file()
    assert "secret.yaml" in (K8S / ".gitignore").read_text().split()


# --- the commands --------------------------------------------------------------------------

def entrypoint() -> list[str]:
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT"))
    return json.loads(line.split(None, 1)[1])


def ours(container: dict) -> bool:
    return container["image"].split("/")[-1].split(":")[0] == IMAGE


def argv_of(container: dict) -> list[str] | None:
    """What the container runs: its command, or our image's entrypoint, then its args (None:
    another image's own entrypoint)."""
    command = container.get("command")
    if command is None:
        if not ours(container):
            return None
        command = entrypoint()
    return [*command, *container.get("args", [])]


def container_env(container: dict) -> dict[str, str]:
    """The container's environment, ConfigMap values filled in, Secret values as placeholders."""
    configmaps = {r["metadata"]["name"]: r.get("data", {}) for _, r in all_resources() if r["kind"] == "ConfigMap"}
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            env[item["name"]] = configmaps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            env[item["name"]] = f"secret-{ref['secretKeyRef']['key'].lower()}"
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command and args; an unknown variable stays as written."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def parse_search(args: list[str]) -> tuple[list[str], click.Context]:
    """Parse `search ARGS` as the CLI would, down to its (sub)command, without running it.
    Only `search.cli.main` is assumed, so this holds when the CLI becomes a package."""
    from search.cli import main

    command, name, rest, parent, path = main, "search", list(args), None, []
    while True:
        ctx = command.make_context(name, list(rest), parent=parent)
        if not isinstance(command, click.Group):
            return path, ctx
        # A group takes no options of its own here, so what it leaves is `SUBCOMMAND ARGS...`,
        # the tail of what it was given.
        tail = ctx.args
        sub = rest[len(rest) - len(tail) - 1]
        name, command, rest = command.resolve_command(ctx, [sub, *tail])
        parent = ctx
        path.append(name)


def search_containers() -> list[tuple[str, list[str], dict]]:
    found = []
    for where, container, _ in containers():
        argv = argv_of(container)
        if argv and argv[0] == "search":
            env = container_env(container)
            found.append((where, expand(argv[1:], env), env))
    return found


@pytest.fixture
def container_environment(monkeypatch):
    """The CLI reads options from the environment (SEARCH_STORAGE...): give it the container's."""
    for name in ("SEARCH_STORAGE", "SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI", "SEARCH_DATA_DIR",
                 "BLOODSEARCH_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)

    def apply(env: dict[str, str]) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return apply


def test_every_search_command_parses_with_our_cli(container_environment, monkeypatch):
    found = search_containers()
    assert {where.split("/")[1] for where, _, _ in found} >= {"bloodsearch-worker", "bloodsearch-create-study"}
    for where, args, env in found:
        with monkeypatch.context():
            container_environment(env)
            try:
                path, ctx = parse_search(args)
            except click.ClickException as exc:
                pytest.fail(f"{where}: `search {' '.join(args)}` does not parse: {exc.format_message()}")
        assert not any("$(" in a for a in args), f"{where}: an undefined $(VAR) in {args}"
        if path == ["proxy"]:  # serves the database to the workers; no tracking, data or cache
            assert ctx.params["storage"] == "secret-proxy_storage", f"{where}: its database not from the Secret"
            continue
        assert ctx.params.get("storage") == "secret-search_storage", f"{where}: storage not from the Secret"
        assert ctx.params.get("tracking_uri") == "secret-search_tracking_uri", f"{where}: tracking not from the Secret"
        assert ctx.params.get("data_dir") == "/data" and ctx.params.get("cache_dir") == "/cache", where
        if where.startswith("Job/bloodsearch-worker/"):
            assert path == ["worker"] and ctx.params["study_name"] == env["STUDY_NAME"]
        if where.startswith("Job/bloodsearch-create-study/"):
            assert path == ["launch"] and ctx.params["workers"] == 1
            assert ctx.params["study_name"] == env["STUDY_NAME"] and ctx.params["trials"] == int(env["TRIALS"])


def test_a_bad_command_would_be_caught():
    with pytest.raises(click.ClickException):
        parse_search(["worker", "--study-nam", "fcn"])
    with pytest.raises(click.ClickException):
        parse_search(["launch", "--trials", "many", "--data-dir", "/data"])


def test_mlflow_server_command_parses_with_mlflow_cli():
    from mlflow.cli import cli

    deployment = by_kind("Deployment", "mlflow")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = expand(argv_of(container), container_env(container))
    assert argv[:2] == ["mlflow", "server"]
    ctx = cli.make_context("mlflow", list(argv[1:]))
    server_ctx = cli.get_command(ctx, "server").make_context("server", list(argv[2:]), parent=ctx)
    assert server_ctx.params["backend_store_uri"] == "secret-mlflow_backend_store_uri"
    assert server_ctx.params["artifacts_destination"] == "/mlartifacts"


# --- secrets --------------------------------------------------------------------------------

def secret_values() -> list[str]:
    import base64

    values = []
    for r in resources(K8S / SECRET_EXAMPLE):
        assert r["kind"] == "Secret"
        values += [str(v) for v in r.get("stringData", {}).values()]
        values += [base64.b64decode(v).decode() for v in r.get("data", {}).values()]
    return values


def test_no_secret_value_in_any_other_manifest():
    values = secret_values()
    assert values and all(len(v) >= 8 for v in values)  # long enough for a text search to mean something
    for path in [*manifest_files(), K8S / "kustomization.yaml"]:
        if path.name == SECRET_EXAMPLE:
            continue
        text = path.read_text()
        leaked = [v for v in values if v in text]
        assert not leaked, f"{path.name} holds Secret value(s) {leaked}"
        assert all(r["kind"] != "Secret" for r in resources(path)), f"{path.name} defines a Secret"


def test_urls_and_passwords_come_from_the_secret_only():
    credentials = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
    for where, container, _ in containers():
        for item in container.get("env", []):
            if item["name"] in URL_ENV:
                assert "secretKeyRef" in item.get("valueFrom", {}), f"{where}: {item['name']} not from a Secret"
            assert not credentials.search(str(item.get("value", ""))), f"{where}: credentials in {item['name']}"
        argv = [*container.get("command", []), *container.get("args", [])]
        assert not any(credentials.search(a) for a in argv), f"{where}: credentials in its command"


def test_secret_example_holds_placeholders_only():
    text = (K8S / SECRET_EXAMPLE).read_text()
    assert "EXAMPLE" in text.splitlines()[0]
    for value in secret_values():
        assert "CHANGE-ME" in value or not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), value
    assert all("CHANGE-ME" in v for v in secret_values() if "password" in v.lower() or "@" in v)


# --- the worker Job -------------------------------------------------------------------------

def test_worker_job_is_what_the_readme_describes():
    job = by_kind("Job", "bloodsearch-worker")
    spec = job["spec"]
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 2
    assert "completions" not in spec  # the Job is done when a worker exits 0: the study has its count
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    (container,) = pod["containers"]
    assert argv_of(container)[:2] == ["search", "worker"]
    env = container_env(container)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    cache = mounts[env["BLOODSEARCH_CACHE_DIR"]]
    assert "emptyDir" in volumes[cache["name"]] and not cache.get("readOnly")
    data = mounts[env["SEARCH_DATA_DIR"]]
    assert data.get("readOnly") is True
    claim = volumes[data["name"]].get("persistentVolumeClaim")
    assert claim is None or claim.get("readOnly") is True
    # Ctrl-C semantics on SIGTERM: the launcher gives its trial process 120 s to close its trial.
    assert pod.get("terminationGracePeriodSeconds", 30) > 120


def test_the_storage_proxy_serves_its_port_to_the_workers(container_environment, monkeypatch):
    """Issue 28: `search proxy` as a Deployment and Service, listening where the Service sends."""
    deployment = by_kind("Deployment", "storage-proxy")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    with monkeypatch.context():
        container_environment(container_env(container))
        path, ctx = parse_search(argv_of(container)[1:])
    assert path == ["proxy"] and ctx.params["host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == ctx.params["port"]
    service = by_kind("Service", "storage-proxy")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]
    assert "PROXY_STORAGE" in {r["metadata"]["name"]: r for _, r in all_resources(include_example=True)
                               if r["kind"] == "Secret"}["bloodsearch"]["stringData"]


def test_study_job_runs_once():
    job = by_kind("Job", "bloodsearch-create-study")
    assert job["spec"].get("completions", 1) == 1 and job["spec"].get("parallelism", 1) == 1
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def _json_pointer_add(doc: dict, path: str, value) -> None:
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc.setdefault(part, {})
    doc[last] = value


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_gpu_overlay_gives_each_worker_pod_one_gpu(version):
    """Issue 28: deploy/k8s/gpu patches the worker Job to request one GPU per pod."""
    overlay = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."]
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "Job", "name": "bloodsearch-worker"}
    job = json.loads(json.dumps(by_kind("Job", "bloodsearch-worker")))
    for op in yaml.safe_load(patch["patch"]):
        assert op["op"] == "add"
        _json_pointer_add(job, op["path"], op["value"])
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    kubernetes_validate.validate(job, version, strict=True)
