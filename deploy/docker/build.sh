#!/usr/bin/env bash
# Build and tag every toxiserve image: toxiserve:serve (the web process), toxiserve:grpc and
# toxiserve:batch, from the repository's Dockerfile.
#
#   deploy/docker/build.sh                 # on the official python:3.11-slim base
#   BASE_IMAGE=debootstrap deploy/docker/build.sh   # on a bookworm base made here (no registry)
#
# With BASE_IMAGE=debootstrap (or when python:3.11-slim cannot be pulled and debootstrap is
# installed), a Debian bookworm root file system with python3 is made with debootstrap and imported
# as toxiserve-base:bookworm, once. Builds run with --network host; pip's CA bundle (the one the
# host's pip configuration names, if any) goes in as a BuildKit secret, never into a layer.
set -euo pipefail
cd "$(dirname "$0")/../.."

base=${BASE_IMAGE:-python:3.11-slim}

# A client that can build with BuildKit (secrets, bind mounts): one with buildx, or a client older
# than 23.0, which has BuildKit built in (Debian's docker.io 20.10 does).
docker=
for candidate in ${DOCKER:-} $(type -ap docker); do
  if "$candidate" buildx version >/dev/null 2>&1; then docker=$candidate; build=("$candidate" buildx build --load); break; fi
  major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
  if [ -n "$major" ] && [ "$major" -lt 23 ]; then docker=$candidate; build=(env DOCKER_BUILDKIT=1 "$candidate" build); break; fi
done
[ -n "$docker" ] || { echo "build.sh: no docker client with BuildKit (install buildx)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

make_debootstrap_base() {
  if "$docker" image inspect toxiserve-base:bookworm >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed" >&2; exit 1; }
  local rootfs
  rootfs=$(mktemp -d)
  echo "build.sh: debootstrapping bookworm into $rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$docker" import - toxiserve-base:bookworm >/dev/null
  rm -rf "$rootfs"
}

if [ "$base" = debootstrap ] || { ! "$docker" image inspect "$base" >/dev/null 2>&1 && ! "$docker" pull -q "$base" >/dev/null 2>&1; }; then
  make_debootstrap_base
  base=toxiserve-base:bookworm
fi

cert=${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.cert='\(.*\)'$/\1/p" | head -1)}
secret=()
if [ -n "$cert" ] && [ -f "$cert" ]; then secret=(--secret "id=pip_cert,src=$cert"); fi

for target in web grpc batch; do
  tag=$target
  [ "$target" = web ] && tag=serve
  echo "build.sh: toxiserve:$tag (target $target, base $base)"
  "${build[@]}" --quiet --network host --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
    --target "$target" --tag "toxiserve:$tag" . >/dev/null
done
"$docker" image ls toxiserve --format '{{.Repository}}:{{.Tag}} {{.Size}}'
