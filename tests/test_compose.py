"""docker-compose.yml: no docker engine here, so check what the compose client (when present)
or a YAML parser can: the topology, 127.0.0.1-only UI ports, volumes and restart policies."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_their_wiring(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "worker", "dashboard"} <= set(services)
    worker = services["worker"]
    assert worker["command"][0] == "worker" and worker["restart"] == "on-failure"
    assert worker["environment"]["SEARCH_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["environment"]["SEARCH_STORAGE"].startswith("postgresql+psycopg://")
    assert "deploy" not in worker or "replicas" not in worker["deploy"]  # scalable: --scale worker=N
    assert "--backend-store-uri" in services["mlflow"]["command"]
    assert "healthcheck" in services["mlflow"] and "healthcheck" in services["postgres"]
    assert services["dashboard"]["profiles"] == ["dashboard"]


def test_ui_ports_bind_to_localhost_and_data_survives_restarts(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        if name not in ("worker", "proxied-worker"):
            assert service["restart"] == "unless-stopped"
    assert {"pgdata", "mlartifacts", "cache"} <= set(compose["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_no_secret_committed(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    assert (ROOT / ".env.example").exists() and ".env" in (ROOT / ".gitignore").read_text().split()


def test_the_storage_proxy_serves_the_proxied_workers(compose):
    """Issue 28: past PostgreSQL's connections, workers go through `search proxy`."""
    services = compose["services"]
    proxy, proxied = services["storage-proxy"], services["proxied-worker"]
    assert proxy["command"][0] == "proxy" and proxy["environment"]["SEARCH_STORAGE"].startswith("postgresql+psycopg://")
    port = proxy["command"][proxy["command"].index("--port") + 1]
    assert proxied["environment"]["SEARCH_STORAGE"] == f"grpc://storage-proxy:{port}"
    assert proxied["command"] == services["worker"]["command"] and proxied["restart"] == "on-failure"
    assert "storage-proxy" in proxied["depends_on"] and "healthcheck" in proxy
    assert proxy["profiles"] == proxied["profiles"] == ["proxy"]  # `up` without the profile: as before


def _compose_client() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_client_accepts_the_file(tmp_path):
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client here (apt-get install docker-compose)")
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    done = subprocess.run([*client, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), "config",
                           "--services"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) >= {"postgres", "mlflow", "worker"}
