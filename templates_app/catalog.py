"""The catalog seeded on first migrate. Operators edit it in the admin afterwards.

Capabilities: every image starts sshd as root, which needs CHOWN (privilege
separation directory), SETUID/SETGID (switch to the logged-in user), SYS_CHROOT
(sshd's privsep chroot), AUDIT_WRITE (login records) and NET_BIND_SERVICE (port 22).
KILL lets sshd end its privilege-separated children. Nothing else is added back.

Images: templates_app/images/<slug>/ (`make images`) builds each `image` below; every
start script shares templates_app/images/common/gpucloud-common.sh, which the CI test
image runs too. Logins: JupyterLab takes the instance's access token, code-server and
the web terminal (gpucloud-web, user root) take it as their password, Forge's web UI
likewise, and vLLM takes it as its API key. ComfyUI has no login of its own: it listens
on loopback and its port is published by gpucloud-web's authenticating proxy (user
root, the token), so nothing a template publishes answers without the credential.
"""

from __future__ import annotations

SSHD_CAPS = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"]

SSH = {"name": "ssh", "port": 22, "protocol": "tcp"}
JUPYTER = {"name": "jupyter", "port": 8888, "protocol": "http"}
TERMINAL = {"name": "terminal", "port": 7681, "protocol": "http"}
CODE_SERVER = {"name": "code-server", "port": 8080, "protocol": "http"}

CATALOG = [
    {
        "slug": "pytorch",
        "name": "PyTorch",
        "category": "framework",
        "description": "PyTorch 2 with CUDA 12 and cuDNN, JupyterLab, code-server and a web terminal.",
        "image": "gpucloud/pytorch:2-cuda12",
        "ports": [SSH, JUPYTER, CODE_SERVER, TERMINAL],
        "access_methods": ["ssh", "jupyter", "code-server", "terminal"],
        "min_gpu_memory_mb": 8192,
        "sort_order": 10,
    },
    {
        "slug": "tensorflow",
        "name": "TensorFlow",
        "category": "framework",
        "description": "TensorFlow with GPU support, JupyterLab and a web terminal.",
        "image": "gpucloud/tensorflow:latest-gpu",
        "ports": [SSH, JUPYTER, TERMINAL],
        "access_methods": ["ssh", "jupyter", "terminal"],
        "min_gpu_memory_mb": 8192,
        "sort_order": 20,
    },
    {
        "slug": "comfyui",
        "name": "ComfyUI",
        "category": "image-generation",
        "description": "ComfyUI node-based diffusion workflows, with JupyterLab for file management.",
        "image": "gpucloud/comfyui:latest",
        "ports": [SSH, {"name": "comfyui", "port": 8188, "protocol": "http"}, JUPYTER],
        "access_methods": ["ssh", "http", "jupyter"],
        "min_gpu_memory_mb": 12288,
        "sort_order": 30,
    },
    {
        "slug": "vllm",
        "name": "vLLM",
        "category": "inference",
        "description": "vLLM OpenAI-compatible inference server on port 8000.",
        "image": "gpucloud/vllm-openai:latest",
        "ports": [SSH, {"name": "openai-api", "port": 8000, "protocol": "http"}, JUPYTER],
        "access_methods": ["ssh", "http", "jupyter"],
        "min_gpu_memory_mb": 16384,
        "sort_order": 40,
    },
    {
        "slug": "stable-diffusion",
        "name": "Stable Diffusion WebUI",
        "category": "image-generation",
        "description": "Stable Diffusion WebUI Forge (A1111-compatible) on port 7860.",
        "image": "gpucloud/stable-diffusion-forge:latest",
        "ports": [SSH, {"name": "webui", "port": 7860, "protocol": "http"}, JUPYTER],
        "access_methods": ["ssh", "http", "jupyter"],
        "min_gpu_memory_mb": 8192,
        "sort_order": 50,
    },
    {
        "slug": "base-cuda",
        "name": "Base CUDA",
        "category": "base",
        "description": "NVIDIA CUDA 12 devel on Ubuntu: compilers and drivers, nothing else.",
        "image": "gpucloud/cuda:12-devel",
        "ports": [SSH, CODE_SERVER, TERMINAL],
        "access_methods": ["ssh", "code-server", "terminal"],
        "min_gpu_memory_mb": 0,
        "sort_order": 60,
    },
]

for _entry in CATALOG:
    _entry.setdefault("cap_add", SSHD_CAPS)
    _entry.setdefault("env", {})
    _entry.setdefault("command", [])
    _entry.setdefault("volume_path", "/workspace")
