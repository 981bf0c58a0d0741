#!/usr/bin/env bash
# The facegate demo, on its embedded defaults: builds the kiosk binary and
# shows the face pipeline on the bundled photos (models/testdata/photos,
# license-clean: see models/testdata/SOURCES.md) and, when the shared dev set
# is beside the clone, its measured accuracy. Needs only Rust.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate/target}"

echo "== building facegate-daemon (release; the first build takes a while)"
cargo build --release --locked -p facegate-daemon
daemon="$CARGO_TARGET_DIR/release/facegate-daemon"
photos="$root/models/testdata/photos"

echo
echo "== detect: faces, boxes and landmarks in one photo"
"$daemon" detect "$photos/face_recognition/obama.jpg"

echo
echo "== compare: the same person, then two different people"
for pair in "obama.jpg obama2.jpg" "obama.jpg biden.jpg"; do
    set -- $pair
    "$daemon" compare "$photos/face_recognition/$1" "$photos/face_recognition/$2" |
        sed -E 's/.*"similarity":([0-9.]+).*"threshold":([0-9.]+),"same_person":(true|false).*/'"$1 vs $2"': similarity \1, threshold \2, same person: \3/'
done

echo
echo "== bad input is refused with a reason"
printf 'not a photo' > "${TMPDIR:-/tmp}/facegate-demo-not-a-photo.jpg"
"$daemon" detect "${TMPDIR:-/tmp}/facegate-demo-not-a-photo.jpg" || echo "(exit status $?)"
rm -f "${TMPDIR:-/tmp}/facegate-demo-not-a-photo.jpg"

data="${FACEGATE_DATA:-$root/../shared/data}"
if [ -f "$data/faces/pairs.csv" ]; then
    echo
    echo "== accuracy on the dev set ($data/faces)"
    "$daemon" eval pairs --root "$data/faces" --pairs "$data/faces/pairs.csv" --within-group-impostors
    "$daemon" eval identify --root "$data/faces" --gallery "$data/faces/gallery.csv" --probes "$data/faces/probes.csv"
else
    echo
    echo "== (no dev set at $data: accuracy evaluation skipped)"
fi

echo
echo "== speed on this machine (one core)"
"$daemon" bench --rounds 3 | sed -E 's/,"/,\n  "/g' | grep -E 'width|height|frame_to_template|templates|search_top5|cpu' | head -20
