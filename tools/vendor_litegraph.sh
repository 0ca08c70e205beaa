#!/usr/bin/env bash
# Refreshes web/vendor/litegraph/ from the npm registry: the built ES module, its CSS and
# licence, and a VERSION file recording the package, version and SHA-256 of each file.
# Usage: tools/vendor_litegraph.sh [VERSION]   (default: the version pinned below)
# Needs npm (only to fetch the tarball); `make run` and the tests never need npm.
set -euo pipefail
PACKAGE="@comfyorg/litegraph"
VERSION="${1:-0.17.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/web/vendor/litegraph"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tar -xzf "$WORK"/*.tgz -C "$WORK"
mkdir -p "$DEST"
# The source map is left out (1 MB); drop the comment pointing at it so browsers do not ask.
grep -v '^//# sourceMappingURL=' "$WORK/package/dist/litegraph.es.js" > "$DEST/litegraph.es.js"
cp "$WORK/package/dist/css/litegraph.css" "$DEST/litegraph.css"
cp "$WORK/package/LICENSE" "$DEST/LICENSE"
{
  echo "package: $PACKAGE"
  echo "version: $VERSION"
  echo "licence: MIT (see LICENSE)"
  echo "source: https://www.npmjs.com/package/$PACKAGE/v/$VERSION (dist/litegraph.es.js, dist/css/litegraph.css)"
  echo "refresh: tools/vendor_litegraph.sh [VERSION]  (or: make vendor-litegraph)"
  echo "sha256:"
  (cd "$DEST" && sha256sum litegraph.es.js litegraph.css LICENSE | sed 's/^/  /')
} > "$DEST/VERSION"
echo "vendored $PACKAGE@$VERSION into ${DEST#"$ROOT"/}"
