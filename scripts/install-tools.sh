#!/usr/bin/env bash
# Install the pinned third-party tools into a cache outside the clone.
# Go programs are built with `go install` only when missing, so a second run costs nothing.
# Usage: scripts/install-tools.sh [opa] [geth] [helm] [promtool] [solc]   (default: all)
set -euo pipefail

AGORA_CACHE="${AGORA_CACHE:-$HOME/.cache/agora}"
BIN="$AGORA_CACHE/bin"
mkdir -p "$BIN"

OPA_VERSION="v1.22.2"

go_tool() { # name module version
    local name="$1" module="$2" version="$3"
    local stamp="$BIN/.$name-$version"
    if [[ -x "$BIN/$name" && -f "$stamp" ]]; then return; fi
    echo "installing $name $version (go install $module@$version)" >&2
    GOBIN="$BIN" GOFLAGS="-trimpath" go install "$module@$version"
    touch "$stamp"
}

install_opa() { go_tool opa github.com/open-policy-agent/opa "$OPA_VERSION"; }

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then tools=(opa); fi
for tool in "${tools[@]}"; do
    "install_$tool"
done
echo "$BIN"
