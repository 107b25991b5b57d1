#!/usr/bin/env bash
# The keys a deployment needs, made here and never committed: a random API key and a random admin
# key. Their sha256 digests go to deploy/k8s/base/secrets/ (the Secret that kustomize generates
# from them); the keys themselves are printed once, for you to hand to clients and operators.
# An existing digest file is kept: add a line `id:<sha256 of the key>` to it for another key.
set -euo pipefail
umask 077
secrets="$(cd "$(dirname "$0")" && pwd)/base/secrets"
mkdir -p "$secrets"
for pair in api:client admin:ops; do
  kind="${pair%%:*}" id="${pair#*:}"
  file="$secrets/$kind-keys.sha256"
  if [ -e "$file" ]; then
    echo "keeping $file" >&2
    continue
  fi
  key="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)"
  printf '%s:%s\n' "$id" "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" > "$file"
  echo "$kind key ($id): $key"
done
