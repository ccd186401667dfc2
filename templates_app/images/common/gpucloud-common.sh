# Sourced by every image's start script, the catalog's (templates_app/images/<slug>/)
# and the CI test image's (scripts/test-image/start.sh), so the script CI runs is the
# one that ships. POSIX sh: the images range from Debian to Ubuntu, dash or bash.
#
# Run-time contract (set by the worker, never baked into an image):
#   GPUCLOUD_ROOT_PASSWORD_HASH  root's password as a crypt(3) hash (preferred), or
#   GPUCLOUD_ROOT_PASSWORD       the plain password; neither: password locked
#   GPUCLOUD_AUTHORIZED_KEYS     root's public keys, one a line
#   GPUCLOUD_SSH_PASSWORD_AUTH   yes|no (default yes)
#   GPUCLOUD_JUPYTER_TOKEN       the access token: JupyterLab's token, and the password
#                                of code-server, of the web terminal and of the apps
#                                behind gpucloud-web's proxy (user root)
# The secrets are read once and unset before any service starts, so no service, shell
# or log inherits them; a service without its token is not started at all.

set -eu

gpucloud_init() {
    mkdir -p /run/sshd /root/.ssh /workspace /var/log/gpucloud
    chmod 700 /root/.ssh

    if [ -n "${GPUCLOUD_ROOT_PASSWORD_HASH:-}" ]; then
        usermod -p "$GPUCLOUD_ROOT_PASSWORD_HASH" root
    elif [ -n "${GPUCLOUD_ROOT_PASSWORD:-}" ]; then
        printf 'root:%s\n' "$GPUCLOUD_ROOT_PASSWORD" | chpasswd
    else
        passwd -l root >/dev/null
    fi
    printf '%s\n' "${GPUCLOUD_AUTHORIZED_KEYS:-}" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys

    # Host keys are made per container, never baked into an image.
    [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
    password_auth="${GPUCLOUD_SSH_PASSWORD_AUTH:-yes}"
    [ "$password_auth" = no ] && root_login=prohibit-password || root_login=yes
    mkdir -p /etc/ssh/sshd_config.d
    cat > /etc/ssh/sshd_config.d/gpucloud.conf <<CONF
PermitRootLogin $root_login
PasswordAuthentication $password_auth
KbdInteractiveAuthentication no
UsePAM no
PermitUserEnvironment yes
CONF
    # Older sshd_config files have no Include line: the first value of a keyword wins.
    if ! grep -qE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config.d' /etc/ssh/sshd_config; then
        { cat /etc/ssh/sshd_config.d/gpucloud.conf; cat /etc/ssh/sshd_config; } > /etc/ssh/sshd_config.new
        mv /etc/ssh/sshd_config.new /etc/ssh/sshd_config
    fi

    GPUCLOUD_TOKEN="${GPUCLOUD_JUPYTER_TOKEN:-}"
    unset GPUCLOUD_ROOT_PASSWORD GPUCLOUD_ROOT_PASSWORD_HASH GPUCLOUD_JUPYTER_TOKEN GPUCLOUD_AUTHORIZED_KEYS

    # SSH sessions do not inherit the container's environment (conda's PATH, CUDA
    # variables, the template's env): hand it on, the secrets already gone, to commands
    # (~/.ssh/environment) and to login shells, whose /etc/profile resets PATH.
    env | grep -E '^[A-Za-z_][A-Za-z0-9_]*=' | grep -vE '^(HOME|HOSTNAME|OLDPWD|PWD|SHLVL|TERM|_)=' \
        > /root/.ssh/environment || true
    chmod 600 /root/.ssh/environment
    export -p | grep -vE '^export (HOME|HOSTNAME|OLDPWD|PWD|SHLVL|TERM|_)=' \
        > /etc/profile.d/00-gpucloud-env.sh || true
    grep -q 'cd /workspace' /root/.profile 2>/dev/null || echo 'cd /workspace 2>/dev/null || true' >> /root/.profile
    cd /workspace
}

gpucloud_start_jupyter() {  # [port]: JupyterLab rooted at /workspace, token-only login
    [ -n "$GPUCLOUD_TOKEN" ] || { echo "gpucloud: no access token; JupyterLab not started" >&2; return 0; }
    # Its log names the token in URLs: it goes to a file, never to `docker logs`.
    JUPYTER_TOKEN="$GPUCLOUD_TOKEN" nohup jupyter lab --ip=0.0.0.0 --port="${1:-8888}" --no-browser \
        --allow-root --ServerApp.root_dir=/workspace --PasswordIdentityProvider.allow_password_change=False \
        > /var/log/gpucloud/jupyter.log 2>&1 &
}

gpucloud_start_code_server() {  # [port]: code-server, the token as its password
    [ -n "$GPUCLOUD_TOKEN" ] || { echo "gpucloud: no access token; code-server not started" >&2; return 0; }
    PASSWORD="$GPUCLOUD_TOKEN" nohup code-server --bind-addr "0.0.0.0:${1:-8080}" --auth password \
        --disable-telemetry --disable-update-check \
        --user-data-dir /workspace/.code-server --extensions-dir /workspace/.code-server/extensions \
        /workspace > /var/log/gpucloud/code-server.log 2>&1 &
}

gpucloud_start_terminal() {  # [port]: the web terminal (gpucloud-web), a login shell in /workspace
    [ -n "$GPUCLOUD_TOKEN" ] || { echo "gpucloud: no access token; web terminal not started" >&2; return 0; }
    GPUCLOUD_WEB_PASSWORD="$GPUCLOUD_TOKEN" nohup gpucloud-web terminal --port "${1:-7681}" --cwd /workspace \
        -- bash -l > /var/log/gpucloud/terminal.log 2>&1 &
}

gpucloud_start_auth_proxy() {  # port upstream-port: an app with no login of its own (ComfyUI),
    # listening on loopback at upstream-port, published on port behind the credential
    [ -n "$GPUCLOUD_TOKEN" ] || { echo "gpucloud: no access token; port $1 not published" >&2; return 0; }
    GPUCLOUD_WEB_PASSWORD="$GPUCLOUD_TOKEN" nohup gpucloud-web proxy --port "$1" --to "127.0.0.1:$2" \
        > "/var/log/gpucloud/proxy-$1.log" 2>&1 &
}

gpucloud_exec_sshd() {  # last: sshd in the foreground keeps the container up even if an app dies
    exec /usr/sbin/sshd -D -e
}
