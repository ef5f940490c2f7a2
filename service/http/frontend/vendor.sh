#!/usr/bin/env bash
# Re-vendor the dashboard's charting library from the lock file: bash service/http/frontend/vendor.sh
# npm ci installs exactly what package-lock.json pins; only the dist files and the license are kept.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
out=../static/vendor
mkdir -p "$out"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css "$out/"
cp node_modules/uplot/LICENSE "$out/uPlot.LICENSE"
version=$(node -p "require('./node_modules/uplot/package.json').version")
echo "vendored uPlot $version into service/http/static/vendor/"
