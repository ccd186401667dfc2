"""The catalog's images: one Dockerfile and start script per template, tagged as the
catalog names them, every start script built on the one shared script that CI runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from templates_app.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "templates_app" / "images"
SLUGS = [entry["slug"] for entry in CATALOG]


def test_make_images_tags_exactly_the_catalogs_images():
    plan = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    built = dict(re.findall(r"-f templates_app/images/([\w-]+)/Dockerfile -t (\S+)", plan))

    assert built == {entry["slug"]: entry["image"] for entry in CATALOG}


@pytest.mark.parametrize("slug", SLUGS)
def test_each_template_has_a_dockerfile_and_a_start_script_on_the_shared_part(slug):
    dockerfile = (IMAGES / slug / "Dockerfile").read_text()
    start = (IMAGES / slug / "start.sh").read_text()

    assert "COPY common/install.sh common/gpucloud-common.sh common/gpucloud_web.py /opt/gpucloud/" in dockerfile
    assert f"COPY {slug}/start.sh /opt/gpucloud/start.sh" in dockerfile
    assert 'CMD ["/opt/gpucloud/start.sh"]' in dockerfile
    assert ". /opt/gpucloud/gpucloud-common.sh\ngpucloud_init\n" in start
    assert start.rstrip().endswith("gpucloud_exec_sshd")
    subprocess.run(["sh", "-n", str(IMAGES / slug / "start.sh")], check=True)


@pytest.mark.parametrize("slug", SLUGS)
def test_start_scripts_start_exactly_the_web_services_the_catalog_offers(slug):
    entry = next(e for e in CATALOG if e["slug"] == slug)
    start = (IMAGES / slug / "start.sh").read_text()
    offered = {port["name"]: port["port"] for port in entry["ports"]}

    for service, function in (
        ("jupyter", "gpucloud_start_jupyter"),
        ("code-server", "gpucloud_start_code_server"),
        ("terminal", "gpucloud_start_terminal"),
    ):
        if service in offered:
            assert f"{function} {offered[service]}\n" in start
        else:
            assert function not in start


@pytest.mark.parametrize("slug", SLUGS)
def test_each_image_installs_the_programs_its_start_script_runs(slug):
    installed = re.search(r"sh /opt/gpucloud/install.sh([\w -]*)", (IMAGES / slug / "Dockerfile").read_text())
    assert installed, slug
    components = set(installed[1].split())
    start = (IMAGES / slug / "start.sh").read_text()

    assert ("code-server" in components) == ("gpucloud_start_code_server" in start)
    assert ("web" in components) == ("gpucloud_start_terminal" in start or "gpucloud_start_auth_proxy" in start)
    assert ("jupyter" in components) == ("gpucloud_start_jupyter" in start)


def test_comfyui_listens_on_loopback_behind_the_authenticating_proxy():
    """ComfyUI has no login: the port the catalog publishes is the proxy's, never ComfyUI's."""
    entry = next(e for e in CATALOG if e["slug"] == "comfyui")
    (port,) = [p["port"] for p in entry["ports"] if p["name"] == "comfyui"]
    start = (IMAGES / "comfyui" / "start.sh").read_text()

    assert "--listen 127.0.0.1 --port 8189" in start
    assert f"gpucloud_start_auth_proxy {port} 8189\n" in start


def test_the_test_image_installs_the_catalogs_programs_with_the_catalogs_installer():
    dockerfile = (ROOT / "scripts" / "test-image" / "Dockerfile").read_text()

    assert "sh install.sh code-server;" in dockerfile
    assert "sh install.sh web " in dockerfile
    assert not list((ROOT / "scripts" / "test-image").glob("*.py"))  # no stand-in services


def test_the_test_image_runs_the_shared_start_script():
    start = (ROOT / "scripts" / "test-image" / "start.sh").read_text()
    subprocess.run(["sh", "-n", str(IMAGES / "common" / "gpucloud-common.sh")], check=True)

    assert ". /opt/gpucloud/gpucloud-common.sh\ngpucloud_init\n" in start
