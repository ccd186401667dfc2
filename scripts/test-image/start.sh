#!/bin/sh
# The test image's start script: the shared part of every catalog image
# (templates_app/images/common/gpucloud-common.sh, copied in by scripts/build-test-image)
# with JupyterLab on 8888 and the web terminal (gpucloud-web) on 7681, the real programs
# the catalog installs. The catalog's own start scripts are in the image too
# (/opt/gpucloud/images/<slug>/start.sh) for tests to run (pytorch's adds code-server).
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
gpucloud_start_jupyter 8888
gpucloud_start_terminal 7681
gpucloud_exec_sshd
