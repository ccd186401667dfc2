"""The layout a maintainer relies on, read from the code itself (README, "What is in the box").

- The import graph runs one way: templates_app ← instances ← billing, and an app imports
  only `gpucloud.errors` of the project package.
- No function-local import of the project's own code, except Django's documented place
  for connecting receivers (AppConfig.ready) and where the module says why.
- The web process's modules never import the Docker runtime or NVML.
- No file of product code outgrows ~400 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("templates_app", "instances", "billing")
PROJECT = (*APPS, "gpucloud")
# What each app may import of the project: lower layers, and the one leaf of gpucloud/.
ALLOWED = {
    "templates_app": {"templates_app", "gpucloud.errors"},
    "instances": {"instances", "templates_app", "gpucloud.errors"},
    "billing": {"billing", "instances", "templates_app", "gpucloud.errors"},
}
MAX_LINES = 420
# Files allowed past MAX_LINES, with their limit (none today).
LONGER_ALLOWED: dict[str, int] = {}


def _product_files() -> list[Path]:
    return [
        path for package in PROJECT for path in sorted((ROOT / package).rglob("*.py")) if "migrations" not in path.parts
    ]


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
    return found


def _first_party(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def test_each_app_imports_only_lower_layers_and_gpucloud_errors():
    wrong = []
    for path in _product_files():
        app = path.relative_to(ROOT).parts[0]
        if app not in ALLOWED:
            continue
        for _, name in _imports(ast.parse(path.read_text())):
            if _first_party(name) and not _allowed(name, ALLOWED[app]):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_the_host_machinery_is_imported_only_by_what_runs_on_the_host():
    # instances.host.* (Docker, NVML) belongs to the worker: services that run there,
    # tasks, and the management commands a host runs. Never views, the API or selectors.
    host_side = ("instances/host/", "instances/services/", "instances/tasks.py", "instances/management/")
    wrong = []
    for path in _product_files():
        rel = str(path.relative_to(ROOT))
        if rel.startswith(host_side):
            continue
        for _, name in _imports(ast.parse(path.read_text())):
            if name.startswith("instances.host"):
                wrong.append(f"{rel} imports {name}")
    assert wrong == []


def test_no_function_local_import_of_the_project_hides_an_arrow():
    hidden = []
    for path in _product_files():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node, name in _imports(func):
                # AppConfig.ready: models exist only once the registry is ready.
                if _first_party(name) and not (path.name == "apps.py" and func.name == "ready"):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert hidden == []


def test_no_product_file_outgrows_the_size_a_reader_holds_in_mind():
    long = {
        str(path.relative_to(ROOT)): n
        for path in [*_product_files(), *sorted((ROOT / "cli").rglob("*.py"))]
        if "build" not in path.relative_to(ROOT).parts
        and (n := len(path.read_text().splitlines())) > LONGER_ALLOWED.get(str(path.relative_to(ROOT)), MAX_LINES)
    }
    assert long == {}


def test_the_web_process_loads_no_docker_and_no_nvml():
    """Import the URL configuration (every view, the API, the admin) in a fresh
    interpreter, as gunicorn would: neither `docker` nor `pynvml` is loaded."""
    code = (
        "import sys, django; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "from django.contrib import admin; admin.autodiscover();"
        "print(sorted(m for m in ('docker', 'pynvml') if m in sys.modules))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "gpucloud.settings", "DEBUG": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
