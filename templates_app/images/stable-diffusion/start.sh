#!/bin/sh
# Stable Diffusion WebUI Forge (7860, A1111-compatible) behind a login (user root, the
# access token); models, outputs and settings under /workspace/forge. sshd and
# JupyterLab (8888).
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
mkdir -p /workspace/forge /run/gpucloud
# The login is read from a root-only file, so it shows in no process list.
umask 077
printf 'root:%s\n' "$GPUCLOUD_TOKEN" > /run/gpucloud/gradio-auth
umask 022
gpucloud_start_jupyter 8888
(cd /opt/forge && exec python3 launch.py --listen --port 7860 --skip-prepare-environment \
    --data-dir /workspace/forge --gradio-auth-path /run/gpucloud/gradio-auth) &
gpucloud_exec_sshd
