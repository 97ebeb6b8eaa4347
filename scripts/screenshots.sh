#!/usr/bin/env bash
# Runs the real RouteLab window under Xvfb, runs the example notebook, and takes
# screenshots for the README (docs/screenshots/). Needs: xvfb, imagemagick (import),
# a software renderer (mesa-vulkan-drivers or libgl1-mesa-dri).
#
#   scripts/screenshots.sh [MODEL] [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny-moe}
out=${2:-docs/screenshots}
mkdir -p "$out"
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill ${app:-} ${xvfb:-} 2>/dev/null || true; rm -rf "$work"' EXIT
display=:$((90 + RANDOM % 9))
Xvfb "$display" -screen 0 1440x900x24 -nolisten tcp &
xvfb=$!
sleep 1
export DISPLAY=$display
shot() { import -window root "$out/$1.png"; echo "screenshot $out/$1.png"; }
for theme in dark light; do
  ROUTELAB_THEME=$theme target/release/routelab gui "$work/$theme" --model "$model" --run-all &
  app=$!
  # Loading, then every example cell: give it time on a slow CPU.
  sleep "${WAIT:-40}"
  shot "workbench-$theme"
  kill "$app"; wait "$app" 2>/dev/null || true
done
