#!/usr/bin/env bash
# Fails on a dependency a crate declares but never uses (cargo-machete, which
# reads the sources, so it needs no build). Installs the pinned cargo-machete
# from crates.io when it is missing (about a minute, once).
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.9.2
if ! cargo machete --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-machete $version (cargo install --locked)"
  cargo install --quiet --locked "cargo-machete@$version"
fi
# A false positive (a crate used only through a macro) goes into
# [package.metadata.cargo-machete] ignored = [...] of its Cargo.toml, with a comment.
cargo machete
