#!/usr/bin/env bash
# Write train_list.txt, val_list.txt and categories.txt for a folder of videos (Kinetics-style).
# Usage: scripts/prepare_videos.sh ROOT [KINETICS_CSV ...]
#   without CSVs: ROOT/videos/<class>/<file> (split held out per class, see --val-fraction)
#                 or ROOT/videos/{train,val}/<class>/<file>;
#   with CSVs (label,youtube_id,time_start,time_end,split): files named
#                 <youtube_id>_<start:06d>_<end:06d>.mp4 or <youtube_id>.mp4 anywhere under ROOT/videos.
#   env: EXTRA for more 'fastvid data prepare-videos' options, e.g. EXTRA="--ext mp4 --val-fraction 0.1"
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,8p' "$0"; exit 2
fi
ROOT="$1"; shift
ARGS=()
for csv in "$@"; do ARGS+=(--split-file "$csv"); done
# shellcheck disable=SC2086
"${FASTVID:-fastvid}" data prepare-videos "$ROOT" "${ARGS[@]}" ${EXTRA:-}
