#!/usr/bin/env bash
# The facegate demo, on its embedded defaults: builds both binaries, shows the
# face pipeline on the bundled photos (models/testdata/photos, license-clean:
# see models/testdata/SOURCES.md) and, when the shared dev set is beside the
# clone, its measured accuracy; then runs the whole system on loopback — the
# sync server in demo mode (its own MongoDB-protocol server, its TLS MQTT
# broker), two kiosks provisioned with one-time tokens, a person enrolled
# centrally into one kiosk's group, that kiosk granting them on a replayed
# clip and the other not knowing them, the decisions audited centrally, then
# the person forgotten. Needs only Rust (tests/setup.sh installs the rest).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests/setup.sh
. tests/target-dir.sh

echo "== building facegate-daemon and facegate-sync-server (the first build takes a while)"
cargo build --locked -p facegate-daemon -p facegate-sync-server
daemon="$CARGO_TARGET_DIR/debug/facegate-daemon"
server="$CARGO_TARGET_DIR/debug/facegate-sync-server"
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

echo
echo "== the whole system on loopback: sync server + two kiosks"
work="$(mktemp -d "${TMPDIR:-/tmp}/facegate-demo.XXXXXX")"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
http_port="${FACEGATE_DEMO_HTTP_PORT:-18080}"
mqtt_port="${FACEGATE_DEMO_MQTT_PORT:-18883}"
metrics_base="${FACEGATE_DEMO_METRICS_PORT:-19464}"
(cd "$work" && FACEGATE_MODELS="$root/models" RUST_LOG=warn exec "$server" demo --listen "127.0.0.1:$http_port" \
    --mqtt-port "$mqtt_port" > "$work/server.json" 2> "$work/server.log") &
pids+=($!)
for _ in $(seq 300); do grep -q '"token"' "$work/server.json" 2>/dev/null && break; sleep 1; done
grep -q '"token"' "$work/server.json" || { echo "the server did not start:"; cat "$work/server.log"; exit 1; }
url="http://127.0.0.1:$http_port"
token="$(sed -nE 's/.*"token":"([^"]+)".*/\1/p' "$work/server.json" | head -1)"
api() { curl -sS -H "authorization: Bearer $token" "$@"; }
echo "server up at $url with its embedded MQTT broker on $mqtt_port (admin token from the demo's throwaway secret)"
clip="$root/models/testdata/liveness/eval/videos/live_clip"
kiosks=("door-1 lobby" "door-2 lab")
for k in "${kiosks[@]}"; do
    set -- $k
    api -X POST -H 'content-type: application/json' -d "{\"id\":\"$2\"}" "$url/v1/groups" >/dev/null
    device="$(api -X POST -H 'content-type: application/json' -d "{\"id\":\"$1\",\"groups\":[\"$2\"]}" "$url/v1/devices")"
    provisioning_token="$(printf '%s' "$device" | sed -nE 's/.*"provisioning_token":"([^"]+)".*/\1/p')"
    echo "kiosk $1 (group $2) registered; provisioning it with its one-time token:"
    "$daemon" provision --server "$url" --token "$provisioning_token" --dir "$work/$1/sync"
done
echo "enrolling a person centrally into group lobby (two frames of the clip both kiosks will see):"
api -F name="Cap Person" -F groups=lobby -F photo=@"$clip/002.jpg" -F photo=@"$clip/009.jpg" "$url/v1/identities"
echo
identity="$(api "$url/v1/identities?limit=10" | sed -nE 's/.*"id":"(id-[^"]+)".*/\1/p' | head -1)"
echo "the same face again under another name is refused (de-duplication):"
api -F name="Someone Else" -F photo=@"$clip/005.jpg" "$url/v1/identities"
echo
n=0
for k in "${kiosks[@]}"; do
    set -- $k
    cat > "$work/$1/daemon.toml" <<EOF
[device]
id = "$1"
[models]
dir = "$root/models"
[source]
kind = "replay"
path = "$clip"
fps = 12.5
repeat = true
[gallery]
db = "$work/$1/db"
[http]
listen = "127.0.0.1:$((metrics_base + n))"
[sync]
dir = "$work/$1/sync"
EOF
    RUST_LOG=info "$daemon" run --config "$work/$1/daemon.toml" 2> "$work/$1/daemon.log" &
    pids+=($!)
    n=$((n + 1))
done
echo "both kiosks running, replaying the clip as their camera; 15 s of their log:"
sleep 15
for k in "${kiosks[@]}"; do
    set -- $k
    grep -E "delta applied|door decision" "$work/$1/daemon.log" | sed -E 's/^\[[^]]*\] *//; s/^/  '"$1"': /' | head -4
done
echo "audit events the server received (door-1 admits the person, door-2 does not know them):"
for k in "${kiosks[@]}"; do
    set -- $k
    { api "$url/v1/audit/events?device=$1&limit=1"; echo; } |
        sed -nE 's/.*"device":"([^"]+)","seq":([0-9]+).*"decision":"([a-z]+)".*"liveness":"([a-z]+)".*/  \1 seq \2: \3 (liveness \4)/p'
done
echo
echo "forgetting the person; door-1 drops them:"
api -X DELETE "$url/v1/identities/$identity" -o /dev/null -w "DELETE -> %{http_code}\n"
sleep 3
grep -E "delta applied" "$work/door-1/daemon.log" | tail -1 | sed -E 's/^\[[^]]*\] *//; s/^/  door-1: /'
api "$url/v1/identities/$identity/erasure"
echo
echo "door-1's metrics:"
curl -sS "http://127.0.0.1:$metrics_base/metrics" | grep -E '^facegate_(gallery_identities|sync_connected|outbox_depth|decisions_total)'
for pid in "${pids[@]:1}"; do kill -TERM "$pid"; wait "$pid" || true; done
echo "== demo done"
