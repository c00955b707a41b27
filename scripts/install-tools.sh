#!/usr/bin/env bash
# Install the pinned third-party tools into a cache outside the clone.
# Go programs are built with `go install` only when missing, so a second run costs nothing.
# Usage: scripts/install-tools.sh [opa] [geth] [helm] [promtool] [solc]   (default: all)
set -euo pipefail

AGORA_CACHE="${AGORA_CACHE:-$HOME/.cache/agora}"
BIN="$AGORA_CACHE/bin"
mkdir -p "$BIN"

OPA_VERSION="v1.22.2"
GETH_VERSION="v1.17.10"
HELM_VERSION="v3.22.0"
PROMTOOL_VERSION="v0.316.0"

go_tool() { # name module version
    local name="$1" module="$2" version="$3"
    local stamp="$BIN/.$name-$version"
    if [[ -x "$BIN/$name" && -f "$stamp" ]]; then return; fi
    echo "installing $name $version (go install $module@$version)" >&2
    GOBIN="$BIN" GOFLAGS="-trimpath" go install "$module@$version"
    touch "$stamp"
}

install_opa() { go_tool opa github.com/open-policy-agent/opa "$OPA_VERSION"; }
install_geth() { go_tool geth github.com/ethereum/go-ethereum/cmd/geth "$GETH_VERSION"; }
install_helm() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; }
install_promtool() { go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION"; }

# solc and @openzeppelin/contracts are pinned by contracts/package-lock.json and
# installed with `npm ci` into $AGORA_CACHE/node, reinstalled only when the lockfile changes.
install_solc() {
    local root dir stamp
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    dir="$AGORA_CACHE/node"
    stamp="$dir/.lock-$(sha256sum "$root/contracts/package-lock.json" | cut -c1-16)"
    if [[ -f "$stamp" ]]; then return; fi
    echo "installing solc and @openzeppelin/contracts (npm ci into $dir)" >&2
    mkdir -p "$dir"
    rm -f "$dir"/.lock-*
    cp "$root/contracts/package.json" "$root/contracts/package-lock.json" "$dir/"
    npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts --silent
    touch "$stamp"
}

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then tools=(opa geth helm promtool solc); fi
for tool in "${tools[@]}"; do
    "install_$tool"
done
echo "$BIN"
