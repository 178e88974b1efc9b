#!/usr/bin/env bash
# Refreshes the web UI's vendored JavaScript (ui/assets/vendor/) from the npm
# registry: Preact, its hooks, and htm, as the ES modules their packages
# ship, renamed so that the browser loads them by relative path (no import
# map, no bundler, no build step for regd itself). Versions are pinned here;
# to upgrade, change them, run this script, run `go test ./ui/`, and commit
# the files together with the VERSIONS record it writes.
#
#   scripts/vendor-ui.sh            # fetch the pinned versions
#   PREACT_VERSION=11.2.1 scripts/vendor-ui.sh
#
# Needs npm (it uses `npm pack`, which downloads one tarball per package and
# checks it against the registry's integrity hash) and sha256sum.
set -euo pipefail

PREACT_VERSION=${PREACT_VERSION:-11.2.0}
HTM_VERSION=${HTM_VERSION:-3.1.1}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=ui/assets/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --json --silent "preact@$PREACT_VERSION" "htm@$HTM_VERSION" >pack.json)
for pkg in "preact-$PREACT_VERSION" "htm-$HTM_VERSION"; do
	mkdir -p "$tmp/$pkg"
	tar -xzf "$tmp/$pkg.tgz" -C "$tmp/$pkg"
done
p="$tmp/preact-$PREACT_VERSION/package"
h="$tmp/htm-$HTM_VERSION/package"
for f in "$p/dist/preact.mjs" "$p/hooks/dist/hooks.mjs" "$h/dist/htm.mjs" "$p/LICENSE" "$h/LICENSE"; do
	[ -f "$f" ] || { echo "vendor-ui: $f is missing from the package; its layout changed" >&2; exit 1; }
done

mkdir -p "$dest"
rm -f "$dest"/*
# The source-map comments are dropped: the maps are not vendored, and a
# browser with its developer tools open would request them.
sed '/^\/\/# sourceMappingURL=/d' "$p/dist/preact.mjs" >"$dest/preact.js"
# hooks imports the bare specifier "preact"; browsers resolve only URLs
# without an import map (which would need an inline script, and the UI's
# Content-Security-Policy allows none).
sed -e '/^\/\/# sourceMappingURL=/d' -e 's/from"preact"/from"\.\/preact\.js"/g' "$p/hooks/dist/hooks.mjs" >"$dest/hooks.js"
if grep -q 'from"preact"' "$dest/hooks.js" || ! grep -q 'from"./preact.js"' "$dest/hooks.js"; then
	echo "vendor-ui: could not rewrite the import in hooks.js; its shape changed" >&2
	exit 1
fi
cp "$h/dist/htm.mjs" "$dest/htm.js"
cp "$p/LICENSE" "$dest/LICENSE.preact"
cp "$h/LICENSE" "$dest/LICENSE.htm"

integrity() { # the registry's integrity hash of a packed package
	node -e 'const p=require(process.argv[1]);const e=p.find(x=>x.name===process.argv[2]);process.stdout.write(e.integrity)' "$tmp/pack.json" "$1"
}
{
	echo "# Written by scripts/vendor-ui.sh; ui/vendor_test.go checks the sums."
	echo "# package version registry-integrity"
	echo "package preact $PREACT_VERSION $(integrity preact)"
	echo "package htm $HTM_VERSION $(integrity htm)"
	echo "# sha256 file (from preact/dist/preact.mjs, preact/hooks/dist/hooks.mjs, htm/dist/htm.mjs)"
	(cd "$dest" && sha256sum preact.js hooks.js htm.js LICENSE.preact LICENSE.htm)
} >"$dest/VERSIONS"
echo "vendor-ui: preact $PREACT_VERSION, htm $HTM_VERSION in $dest:"
ls -l "$dest"
