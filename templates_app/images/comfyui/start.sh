#!/bin/sh
# ComfyUI (8188) with its models, inputs and outputs under /workspace/ComfyUI; sshd and
# JupyterLab (8888) for files. ComfyUI has no login of its own: in "direct" mode put it
# behind the tunnel or a firewall (see templates_app/catalog.py).
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
mkdir -p /workspace/ComfyUI/models /workspace/ComfyUI/input /workspace/ComfyUI/output /workspace/ComfyUI/custom_nodes
# The image's stock models and nodes are seeded once; the user's copies win after that.
cp -rn /opt/ComfyUI/models/. /workspace/ComfyUI/models/ 2>/dev/null || true
cp -rn /opt/ComfyUI/custom_nodes/. /workspace/ComfyUI/custom_nodes/ 2>/dev/null || true
gpucloud_start_jupyter 8888
(cd /opt/ComfyUI && exec python3 main.py --listen 0.0.0.0 --port 8188 \
    --base-directory /workspace/ComfyUI) &
gpucloud_exec_sshd
