#!/bin/bash
# Build efajob's wheel and put it, with the OnNodeConfigured script, where the cluster config
# (cluster-config-snippet.yaml) fetches them: s3://BUCKET/PREFIX/.
#
#   upload.sh --bucket BUCKET [--prefix efajob] [--python python3] [--dist DIR] [--dry-run]
#
# --dry-run builds the wheel but prints the `aws s3 cp` commands instead of running them.
# Then prints the Script and --wheel values for the cluster config. Exits non-zero on failure
# (this runs on the admin's machine, not during a node's bootstrap).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUCKET="" PREFIX=efajob PYTHON=python3 DIST="" DRY_RUN=0

usage() { echo "usage: $0 --bucket BUCKET [--prefix P] [--python PATH] [--dist DIR] [--dry-run]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --bucket) [ $# -ge 2 ] || usage; BUCKET=$2; shift ;;
        --prefix) [ $# -ge 2 ] || usage; PREFIX=${2%/}; shift ;;
        --python) [ $# -ge 2 ] || usage; PYTHON=$2; shift ;;
        --dist) [ $# -ge 2 ] || usage; DIST=$2; shift ;;
        --dry-run) DRY_RUN=1 ;;
        *) usage ;;
    esac
    shift
done
[ -n "$BUCKET" ] || usage
DIST=${DIST:-$REPO/dist}

mkdir -p "$DIST"
# A pure wheel (py3-none-any) from a copy without the optional C extension: this machine's
# Python and platform are not the nodes'. The nodes build the C reader themselves
# (`efajob install native`, run by efajob-node-configured.sh) where they have a compiler.
SRC=$(mktemp -d "${TMPDIR:-/tmp}/efajob-src.XXXXXX")
trap 'rm -rf "$SRC"' EXIT
cp -R "$REPO/efajob" "$REPO/README.md" "$SRC/"
mkdir -p "$SRC/slurm" && cp "$REPO/slurm/efajob-check-node" "$SRC/slurm/"
sed '/^# native-extension-begin$/,/^# native-extension-end$/d' "$REPO/pyproject.toml" > "$SRC/pyproject.toml"
find "$SRC/efajob" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
# --no-deps: the nodes' pip fetches click, boto3 and prometheus-client from their index.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$DIST" "$SRC"
VERSION=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO/pyproject.toml" 2>/dev/null || sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
WHEEL=$DIST/efajob-$VERSION-py3-none-any.whl
[ -f "$WHEEL" ] || { echo "$0: no $WHEEL after the build" >&2; exit 1; }
echo "built $WHEEL"

DEST=s3://$BUCKET/$PREFIX
for f in "$WHEEL" "$HERE/efajob-node-configured.sh"; do
    if [ "$DRY_RUN" = 1 ]; then
        echo "would run: aws s3 cp $f $DEST/${f##*/}"
    else
        aws s3 cp --only-show-errors "$f" "$DEST/${f##*/}"
        echo "uploaded $DEST/${f##*/}"
    fi
done
echo "cluster config: Script: $DEST/efajob-node-configured.sh"
echo "                Args: [compute|head, --wheel, $DEST/${WHEEL##*/}, ...]"
