#!/usr/bin/env bash
# Supply chain: what may enter the dependency graph (deny.toml), checked by
# cargo-deny: licenses, bans (OpenSSL, native-tls; duplicates reported),
# sources (crates.io only). CI runs it.
#
# Not run here: `cargo deny check advisories`. It clones the RustSec
# advisory database from github.com, which CI's machines cannot reach.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
root=.tools/cargo-deny
if ! "$root/bin/cargo-deny" --version 2>/dev/null | grep -qF "$version"; then
  echo "supply-chain: installing cargo-deny $version into $root"
  cargo install cargo-deny --version "$version" --locked --root "$root" --quiet
fi
exec "$root/bin/cargo-deny" check --hide-inclusion-graph licenses bans sources
