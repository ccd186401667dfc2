#!/bin/sh
# PyTorch: sshd, JupyterLab (8888), code-server (8080) and a web terminal (7681).
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
gpucloud_start_jupyter 8888
gpucloud_start_code_server 8080
gpucloud_start_terminal 7681
gpucloud_exec_sshd
