#!/usr/bin/env bash
# Write categories.txt, train_videofolder.txt and val_videofolder.txt for 20BN-Jester as
# downloaded (ROOT/jester-v1-{labels,train,validation}.csv, or ROOT/labels/{labels,...}.csv,
# + ROOT/20bn-jester-v1/<id>/00001.jpg ...). Something-Something V1: 'fastvid data prepare-sthv1'.
# Usage: scripts/prepare_jester.sh ROOT [extra 'fastvid data prepare-jester' options]
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,5p' "$0"; exit 2
fi
ROOT="$1"; shift
"${FASTVID:-fastvid}" data prepare-jester "$ROOT" "$@"
