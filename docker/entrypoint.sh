#!/usr/bin/env bash
# Entry point of distrain's image (docker/Dockerfile). It starts as root only to prepare the
# shared folders, then runs everything as the unprivileged user distrain:
#
#   1. /out and /keys are made the user's (a bind-mounted docker/out is root's when Docker
#      creates it);
#   2. the first container of the project to start makes, under a lock, the ssh key pair,
#      the workers' host key, authorized_keys and known_hosts in the volume /keys (mode
#      0600); later starts keep them. Nothing secret is in the image;
#   3. then the role:
#        worker    sshd as distrain on port 2222, keys only, until stopped;
#        COMMAND   anything else, as given (the launcher: distrain-run finds the workers
#                  through DISTRAIN_HOST_DISCOVERY_SCRIPT, set in docker/compose.yaml).
set -euo pipefail

keys=/keys
user=distrain

make_keys() {
  if [ -s "$keys/id_ed25519" ] && [ -s "$keys/ssh_host_ed25519_key" ] \
     && [ -s "$keys/known_hosts" ] && [ -s "$keys/authorized_keys" ]; then
    return
  fi
  umask 077
  local new
  new=$(mktemp -d "$keys/.new.XXXXXX")
  ssh-keygen -q -t ed25519 -N '' -C "distrain-job" -f "$new/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C "distrain-worker" -f "$new/ssh_host_ed25519_key"
  cp "$new/id_ed25519.pub" "$new/authorized_keys"
  echo "* $(cut -d' ' -f1,2 "$new/ssh_host_ed25519_key.pub")" > "$new/known_hosts"
  chmod 0600 "$new"/*
  # Whole files only: each lands under its final name in one rename.
  for file in "$new"/*; do mv -f "$file" "$keys/"; done
  rmdir "$new"
  echo "distrain keys: made a new ed25519 key pair and host key in $keys"
}

if [ "$(id -u)" -eq 0 ]; then
  for dir in /out "$keys"; do
    [ "$(stat -c %U "$dir")" = "$user" ] || chown "$user:$user" "$dir"
  done
  chmod 0700 "$keys"
  HOME=/home/$user USER=$user LOGNAME=$user \
    exec setpriv --reuid="$user" --regid="$user" --init-groups "$0" "$@"
fi
(flock 9 && make_keys) 9>"$keys/.lock"

case "${1:-worker}" in
  worker)
    exec /usr/sbin/sshd -D -e -f /etc/distrain/sshd_config
    ;;
  *)
    exec "$@"
    ;;
esac
