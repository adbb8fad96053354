#!/usr/bin/env bash
# Makes a local Debian bookworm base image with Python 3, for hosts whose Docker engine
# reaches no image registry. Needs root, debootstrap and a running Docker engine.
#
#   docker/make-base.sh [IMAGE]        # default image name: distrain-base:bookworm
#
# It records DISTRAIN_BASE_IMAGE=IMAGE in docker/.env, which compose reads, so
# `docker compose -f docker/compose.yaml build` builds on it (delete the line to build on the
# public Python image again). An image of that name that already exists is kept.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${1:-distrain-base:bookworm}

record() {
  local dotenv=$here/.env
  touch "$dotenv"
  grep -v '^DISTRAIN_BASE_IMAGE=' "$dotenv" > "$dotenv.tmp" || true
  echo "DISTRAIN_BASE_IMAGE=$image" >> "$dotenv.tmp"
  mv "$dotenv.tmp" "$dotenv"
  echo "make-base: docker/.env now builds on $image"
}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "make-base: $image exists; keeping it"
  record
  exit 0
fi
for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || {
    echo "make-base: $tool is not installed (apt-get install debootstrap docker.io)" >&2
    exit 2
  }
done
if [ "$(id -u)" -ne 0 ]; then
  echo "make-base: debootstrap needs root; run it with sudo" >&2
  exit 2
fi

root=$(mktemp -d /tmp/distrain-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "make-base: debootstrap $suite into $root (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2
  echo "make-base: debootstrap failed (full log: $root.log)" >&2
  exit 1
}
rm -f "$root.log"
# What a container does not need: package lists and caches (apt-get update brings them back).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "make-base: made $image"
record
