#!/bin/sh
# ComfyUI (8188) with its models, inputs and outputs under /workspace/ComfyUI; sshd and
# JupyterLab (8888) for files. ComfyUI has no login of its own: it listens on loopback
# (8189) and is published on 8188 by gpucloud-web's authenticating proxy (user root, the
# instance's token), its websocket included.
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
mkdir -p /workspace/ComfyUI/models /workspace/ComfyUI/input /workspace/ComfyUI/output /workspace/ComfyUI/custom_nodes
# The image's stock models and nodes are seeded once; the user's copies win after that.
cp -rn /opt/ComfyUI/models/. /workspace/ComfyUI/models/ 2>/dev/null || true
cp -rn /opt/ComfyUI/custom_nodes/. /workspace/ComfyUI/custom_nodes/ 2>/dev/null || true
gpucloud_start_jupyter 8888
(cd /opt/ComfyUI && exec python3 main.py --listen 127.0.0.1 --port 8189 \
    --base-directory /workspace/ComfyUI) &
gpucloud_start_auth_proxy 8188 8189
gpucloud_exec_sshd
