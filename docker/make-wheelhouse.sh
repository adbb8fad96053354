#!/usr/bin/env bash
# Downloads every wheel the image installs into a folder, for building with no index: where
# the build cannot reach PyPI (a TLS proxy whose CA only the host trusts, an air-gapped
# cluster), the Dockerfile installs from docker/wheels/ with --no-index.
#
#   docker/make-wheelhouse.sh [DIR]     # default DIR: docker/wheels
#
# Environment: TENSORFLOW (default tensorflow-cpu; "tensorflow[and-cuda]" for the GPU image),
# PYTHON_VERSION (the base image's Python, default 3.11), WHEELHOUSE_CACHE (a folder kept
# between runs: wheels are downloaded there once and copied into DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/wheels}
tensorflow=${TENSORFLOW:-tensorflow-cpu}
python_version=${PYTHON_VERSION:-3.11}
store=${WHEELHOUSE_CACHE:-$dest}
mkdir -p "$dest" "$store"

echo "make-wheelhouse: $tensorflow and docker/requirements.txt for CPython $python_version into $store"
# Every manylinux tag up to glibc 2.28 (the bases are Debian bookworm, glibc 2.36); pip takes
# each tag given, not the older ones it implies.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 28); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
python3 -m pip download --quiet --dest "$store" --only-binary=:all: "${platforms[@]}" \
  --python-version "$python_version" --implementation cp \
  "$tensorflow" -r "$here/requirements.txt"
if [ "$store" != "$dest" ]; then
  cp -l "$store"/*.whl "$dest"/ 2>/dev/null || cp "$store"/*.whl "$dest"/
fi
echo "make-wheelhouse: $(find "$dest" -name "*.whl" | wc -l) wheels in $dest"
