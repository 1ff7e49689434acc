#!/usr/bin/env bash
# cargo-skeleton.sh SRC DEST: copy the Cargo workspace at SRC to DEST as
# manifests and lock file only, with stand-in sources, so that
# `cargo build --locked` in DEST compiles every dependency and nothing of
# ours. deploy/Dockerfile builds its dependency layer from DEST: that layer's
# cache key is then the manifests, not the sources.
#
# Each member gets src/main.rs and src/lib.rs stand-ins, a build.rs stand-in
# if it has a build script, and a stand-in for every target cargo would look
# for: explicit `path = "..."` entries and the default paths of [[bin]],
# [[example]], [[test]] and [[bench]] entries that give only a name.
set -euo pipefail

src="${1:?usage: cargo-skeleton.sh SRC DEST}"
dest="${2:?usage: cargo-skeleton.sh SRC DEST}"
stand_in='fn main() {}'

mkdir -p "$dest"
cp "$src/Cargo.toml" "$src/Cargo.lock" "$dest/"

# Targets a manifest names: one relative path per line.
targets() {
    awk '
        function flush() {
            if (section != "" && path == "" && name != "") {
                dir = (section == "bin") ? "src/bin" : (section == "example") ? "examples" : (section == "test") ? "tests" : "benches"
                print dir "/" name ".rs"
            }
            section = ""; name = ""; path = ""
        }
        /^\[\[(bin|example|test|bench)\]\]/ { flush(); section = $0; gsub(/[\[\] ]/, "", section); next }
        /^\[/ { flush(); next }
        section != "" && /^name *= *"/ { name = $0; sub(/^name *= *"/, "", name); sub(/".*/, "", name) }
        /^path *= *"/ { p = $0; sub(/^path *= *"/, "", p); sub(/".*/, "", p); print p; if (section != "") path = p }
        END { flush() }
    ' "$1"
}

cd "$src"
find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml' -not -path './deploy/*' | while read -r manifest; do
    member="$(dirname "$manifest")"
    out="$dest/$member"
    mkdir -p "$out/src"
    cp "$manifest" "$out/"
    echo "$stand_in" > "$out/src/main.rs"
    : > "$out/src/lib.rs"
    if [[ -f "$member/build.rs" ]]; then
        echo "$stand_in" > "$out/build.rs"
    fi
    targets "$manifest" | while read -r target; do
        mkdir -p "$out/$(dirname "$target")"
        [[ -f "$out/$target" ]] || echo "$stand_in" > "$out/$target"
    done
done
