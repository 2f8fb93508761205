#!/usr/bin/env bash
# Unpack 20BN-Jester as downloaded (23 parts 20bn-jester-v1-00 ... -22 of one tar.gz, plus the
# jester-v1-*.csv label files) into the Jester layout, then write fastvid's lists.
# Usage: scripts/unpack_jester_dataset.sh ZIP_DIR TARGET
#   TARGET gets 20bn-jester-v1/<id>/00001.jpg ..., labels/{labels,train,validation,test}.csv,
#   categories.txt, train_videofolder.txt, val_videofolder.txt.
# The parts are streamed into tar one after the other: no 22 GB concatenated copy on disk.
set -euo pipefail
if [ $# -ne 2 ]; then
    sed -n '2,7p' "$0"; exit 2
fi
FASTVID="${FASTVID:-fastvid}"
"$FASTVID" data unpack-jester "$1" "$2"
"$FASTVID" data prepare-jester "$2"
