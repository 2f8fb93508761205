#!/usr/bin/env bash
# Write categories.txt, train_videofolder.txt and val_videofolder.txt for a Jester-layout root
# (ROOT/labels/{labels,train,validation}.csv + ROOT/20bn-jester-v1/<id>/*.jpg).
# Something-Something v1 has the same layout: pass its frame folder with --frames-dir.
# Usage: scripts/prepare_jester.sh ROOT [extra 'fastvid data prepare-jester' options]
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,5p' "$0"; exit 2
fi
ROOT="$1"; shift
"${FASTVID:-fastvid}" data prepare-jester "$ROOT" "$@"
