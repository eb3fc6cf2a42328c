#!/usr/bin/env bash
# Install the Rust corpus of bench/ingest.py: the Debian packages listed in
# bench/ingest_crates.txt (sources land in /usr/share/cargo/registry/<crate>-<version>/),
# plus universal-ctags for the comparison. Idempotent; needs root (or sudo) and Debian apt.
#
# Every member is installed together with its feature packages (librust-<crate>+<feature>-dev):
# a workspace member's optional dependencies must all be present for `cargo metadata` to resolve,
# and Debian puts them in those packages, not in the base one.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
list="${1:-$here/ingest_crates.txt}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# Members and `dep:` lines, comments stripped.
mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/^dep://' -e 's/[[:space:]]//g' "$list" | grep -v '^$')

# apt-get update once, only when apt does not know a package we need (fresh machine, no lists).
if ! apt-cache show "${pkgs[@]}" universal-ctags >/dev/null 2>&1; then
    $SUDO apt-get update -q
fi

# Feature packages that really exist (features without extra dependencies are only Provides of
# the base package and are not listed by pkgnames).
mapfile -t features < <(for p in "${pkgs[@]}"; do apt-cache pkgnames "${p%-dev}+"; done | sort -u)

$SUDO apt-get install -y -q --no-install-recommends universal-ctags git "${pkgs[@]}" "${features[@]}"
echo "installed ${#pkgs[@]} packages (+${#features[@]} feature packages) and universal-ctags"
