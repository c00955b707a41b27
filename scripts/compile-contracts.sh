#!/usr/bin/env bash
# Compile contracts/src with the pinned solc and write the committed artifacts:
# contracts/artifacts/<Name>.json and the copy shipped in the Python package
# (gateway/chain/artifacts/). With --check, compile into a temporary directory and
# fail if either committed set differs (CI runs this).
# Usage: scripts/compile-contracts.sh [--check]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AGORA_CACHE="${AGORA_CACHE:-$HOME/.cache/agora}"
export AGORA_NODE_MODULES="$AGORA_CACHE/node/node_modules"
targets=("$root/contracts/artifacts" "$root/gateway/chain/artifacts")

AGORA_CACHE="$AGORA_CACHE" "$root/scripts/install-tools.sh" solc >/dev/null

case "${1:-}" in
    "")
        rm -f "${targets[0]}"/*.json "${targets[1]}"/*.json
        node "$root/contracts/compile.mjs" "${targets[@]}"
        ;;
    --check)
        fresh="$(mktemp -d)"
        trap 'rm -rf "$fresh"' EXIT
        node "$root/contracts/compile.mjs" "$fresh" 2>/dev/null
        status=0
        for target in "${targets[@]}"; do
            if ! diff -r -q "$fresh" "$target"; then
                echo "error: ${target#"$root"/} differs from a fresh compile" >&2
                status=1
            fi
        done
        if [[ $status -ne 0 ]]; then
            echo "run scripts/compile-contracts.sh and commit the artifacts" >&2
            exit 1
        fi
        echo "contract artifacts match a fresh compile" >&2
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
