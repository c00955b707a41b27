#!/usr/bin/env bash
# Install the pinned third-party tools into a cache outside the clone, so a second run costs nothing.
#   uv              the Python package manager that installs the locked dependencies (uv.lock),
#                   from tools/uv-requirements.txt (version and hashes), with pip
#   anvil           Foundry's dev chain, the quickstart's node: a prebuilt binary from the npm
#                   package @foundry-rs/anvil, pinned by tools/package-lock.json
#   solc            the Solidity compiler and @openzeppelin/contracts, pinned by
#                   contracts/package-lock.json (for scripts/compile-contracts.sh)
#   opa geth helm promtool   Go programs, built with `go install` only when missing
#   chromium        Debian's chromium, for the community page's browser tests (Playwright drives
#                   /usr/bin/chromium; Playwright's own browser downloads are never used)
#   redis           redis-server, the Debian package, for the usage tests (counters shared by
#                   replicas); installed with apt-get only when missing (needs root, as in CI)
#   strace          the Debian package, for the reliability suite's read-only-disk fault (write
#                   errors injected into the decision log's file)
# `make run` installs uv, opa and anvil; `make test` installs them all.
# Usage: scripts/install-tools.sh [uv] [opa] [anvil] [geth] [helm] [promtool] [solc] [chromium] [redis] [strace]
#        (default: all)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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

# The stamp of a lockfile: its hash, so that a changed pin reinstalls.
lock_stamp() { # dir lockfile
    echo "$1/.lock-$(sha256sum "$2" | cut -c1-16)"
}

npm_tools() { # what source-dir target-dir: `npm ci` of source-dir's lockfile into target-dir
    local what="$1" source="$2" dir="$3" stamp
    stamp="$(lock_stamp "$dir" "$source/package-lock.json")"
    if [[ -f "$stamp" ]]; then return; fi
    echo "installing $what (npm ci into $dir)" >&2
    mkdir -p "$dir"
    rm -f "$dir"/.lock-*
    cp "$source/package.json" "$source/package-lock.json" "$dir/"
    # No install scripts: the packages ship what is needed, and nothing is fetched from elsewhere.
    npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts --silent
    touch "$stamp"
}

install_solc() { npm_tools "solc and @openzeppelin/contracts" "$root/contracts" "$AGORA_CACHE/node"; }

# @foundry-rs/anvil installs the binary of this platform only, in @foundry-rs/anvil-<os>-<arch>.
install_anvil() {
    local dir="$AGORA_CACHE/anvil" binaries
    npm_tools anvil "$root/tools" "$dir"
    binaries=("$dir"/node_modules/@foundry-rs/anvil-*/bin/anvil)
    if [[ ${#binaries[@]} -ne 1 || ! -x "${binaries[0]}" ]]; then
        echo "error: @foundry-rs/anvil has no binary for this platform ($(uname -sm))" >&2
        exit 1
    fi
    ln -sfn "${binaries[0]}" "$BIN/anvil"
}

install_uv() {
    local dir="$AGORA_CACHE/uv" stamp
    stamp="$(lock_stamp "$dir" "$root/tools/uv-requirements.txt")"
    if [[ -f "$stamp" && -x "$BIN/uv" ]]; then return; fi
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        -r "$root/tools/uv-requirements.txt"
    ln -sf "$dir/bin/uv" "$BIN/uv"
    touch "$stamp"
    echo "installed $("$BIN/uv" --version) into $BIN" >&2
}

# Debian packages: installed with apt-get only when their command is missing (needs root,
# as in CI). Usage: apt_install COMMAND PACKAGE
apt_install() {
    if command -v "$1" >/dev/null; then return; fi
    echo "installing $2 (apt-get install $2)" >&2
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "error: $1 is missing; install the Debian package $2 (as root)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }
}

install_chromium() { apt_install /usr/bin/chromium chromium; }
install_redis() { apt_install redis-server redis-server; }
install_strace() { apt_install strace strace; }

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then tools=(uv opa anvil geth helm promtool solc chromium redis strace); fi
for tool in "${tools[@]}"; do
    "install_$tool"
done
echo "$BIN"
