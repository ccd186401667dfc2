#!/bin/sh
# Build-time installer shared by the catalog images: sshd always, and per argument
# `jupyter`, `code-server`, `ttyd`. Versions are pinned; no secret is baked in.
set -eu
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.96.4}"
TTYD_VERSION="${TTYD_VERSION:-1.7.7}"
JUPYTERLAB_VERSION="${JUPYTERLAB_VERSION:-4.3.5}"
export DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1

apt-get update -q
apt-get install -y -q --no-install-recommends openssh-server ca-certificates curl procps less nano git passwd
# Each container generates its own host keys at start (gpucloud-common.sh).
rm -f /etc/ssh/ssh_host_*
mkdir -p /run/sshd /workspace /var/log/gpucloud

for component in "$@"; do
    case "$component" in
    jupyter)
        python3 -m pip install -q "jupyterlab==$JUPYTERLAB_VERSION"
        ;;
    code-server)
        arch="$(dpkg --print-architecture)"
        curl -fsSL -o /tmp/code-server.deb \
            "https://github.com/coder/code-server/releases/download/v$CODE_SERVER_VERSION/code-server_${CODE_SERVER_VERSION}_$arch.deb"
        dpkg -i /tmp/code-server.deb
        rm -f /tmp/code-server.deb
        ;;
    ttyd)
        curl -fsSL -o /usr/local/bin/ttyd \
            "https://github.com/tsl0922/ttyd/releases/download/$TTYD_VERSION/ttyd.$(uname -m)"
        chmod 755 /usr/local/bin/ttyd
        ;;
    *)
        echo "install.sh: unknown component $component" >&2
        exit 2
        ;;
    esac
done

apt-get clean
rm -rf /var/lib/apt/lists/*
