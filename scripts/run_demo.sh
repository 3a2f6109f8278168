#!/usr/bin/env bash
# run_demo.sh BUILD -- the main job on built-in defaults (make run): trains a tiny GPT on built-in
# text with progress, saves/reloads it as a Hugging Face directory and prints a sample.
set -euo pipefail
BUILD=${1:-build}
"$BUILD/spry" demo --steps 600 --out runs/demo
