#!/bin/sh
# Container start script. Credentials arrive in the environment at run time and are
# scrubbed from it before any service starts; nothing secret is baked into the image.
set -eu
mkdir -p /run/sshd /root/.ssh /workspace
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

[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
PASSWORD_AUTH="${GPUCLOUD_SSH_PASSWORD_AUTH:-yes}"
cat > /etc/ssh/sshd_config.d/gpucloud.conf <<CONF
PermitRootLogin yes
PasswordAuthentication $PASSWORD_AUTH
KbdInteractiveAuthentication no
UsePAM no
CONF

TOKEN="${GPUCLOUD_JUPYTER_TOKEN:-}"
unset GPUCLOUD_ROOT_PASSWORD GPUCLOUD_ROOT_PASSWORD_HASH GPUCLOUD_JUPYTER_TOKEN
if [ -n "$TOKEN" ]; then
    GPUCLOUD_HTTP_TOKEN="$TOKEN" python3 /usr/local/bin/gpucloud-tokenhttp &
fi
exec /usr/sbin/sshd -D -e
