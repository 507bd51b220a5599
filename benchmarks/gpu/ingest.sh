#!/usr/bin/env bash
# After a GPU window, here: bring the runs it made into the committed results, in one command.
#
# Usage, from the repository root:
#   bash benchmarks/gpu/ingest.sh ARCHIVE [RESULTS_DIR]
# ARCHIVE: what paper_window.sh left in $OUT (<suite>-runs.tar.gz, or runs-so-far.tar.gz from a
# call cut short); RESULTS_DIR: default results/<suite>, the suite read from the archive.
# Every finished run file (with its saved predictions) is copied into RESULTS_DIR/runs. A run
# already there with other contents is not overwritten: the script stops and names it (FORCE=1
# replaces it, the old files kept as <run>.json.bak / .npz.bak). Then the run files are merged
# into RESULTS_DIR/results.json as `uqbench run` merges them (those made with the suite's
# settings by this code version; the others are listed as left out), with the window's
# environment and command (COMMAND=... adds to it), and, unless REPORT=0, the report is
# rebuilt. Run `stage_data.sh unslim` before committing.
set -euo pipefail
archive=${1:?usage: ingest.sh ARCHIVE [RESULTS_DIR]}
[ -f "$archive" ] || { echo "ingest: no archive at $archive" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$archive" -C "$tmp" || { echo "ingest: $archive is not a readable tar.gz" >&2; exit 2; }
# Run files lie in <suite>/runs/ (the merged archive) or parts/<job>/<suite>/runs/ (a snapshot).
mapfile -t found < <(find "$tmp" -path '*/runs/*.json' -not -path '*/superseded/*' | sort)
[ "${#found[@]}" -gt 0 ] || { echo "ingest: no run files in $archive" >&2; exit 2; }
suite=$(basename "$(dirname "$(dirname "${found[0]}")")")
dest=${2:-results/$suite}
mkdir -p "$dest/runs"
copied=0 same=0
for f in "${found[@]}"; do
  name=$(basename "$f" .json)
  status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status","ok"))' "$f" 2>/dev/null || echo unreadable)
  if [ "$status" != ok ]; then echo "  $name: $status, not copied"; continue; fi
  for ext in json npz; do
    src=$(dirname "$f")/$name.$ext
    [ -f "$src" ] || continue
    if [ -f "$dest/runs/$name.$ext" ]; then
      if cmp -s "$src" "$dest/runs/$name.$ext"; then
        [ "$ext" = json ] && same=$((same + 1))
        continue
      fi
      if [ "${FORCE:-0}" != 1 ]; then
        echo "ingest: $dest/runs/$name.$ext exists with other contents (FORCE=1 replaces it," \
          "keeping the old one as .bak); nothing merged" >&2
        exit 1
      fi
      mv "$dest/runs/$name.$ext" "$dest/runs/$name.$ext.bak"
    fi
    cp "$src" "$dest/runs/$name.$ext"
    [ "$ext" = json ] && copied=$((copied + 1))
  done
done
echo "copied $copied run(s) into $dest/runs ($same already there)"
python3 - "$dest" "$suite" "$tmp" "${COMMAND:-}" <<'PY'
import json
import sys
from pathlib import Path

import torch

from uqbench.data import DataSource
from uqbench.errors import UQBenchError
from uqbench.runner import Runner, merge_results
from uqbench.suites import load_suite

dest, suite, tmp, extra = sys.argv[1:]
dest = Path(dest)
if dest.name != suite:
    sys.exit(f"ingest: the results folder of suite {suite!r} must be named {suite!r}, not {dest}")
window = sorted(Path(tmp).rglob("results.json"))
made = json.loads(window[0].read_text()) if window else {}
command = made.get("command") or f"benchmarks/gpu/paper_window.sh (suite {suite})"
command = f"{command}; {extra}" if extra else command
try:
    # The runs the suite's settings make, as `uqbench run` merges them: run files of other
    # settings or another code version are left out, and said so.
    runner = Runner(load_suite(suite), out=dest.parent, source=DataSource(download=False),
                    device=torch.device("cpu"), command=command, progress=False,
                    log=lambda *_: None)
    res = merge_results(dest, suite, command, made.get("environment") or {},
                        expected=runner.expected_specs())
except UQBenchError as exc:
    sys.exit(f"ingest: {exc}")
print(f"merged {len(res['runs'])} runs into {dest}/results.json"
      + (f"; left out: {len(res['left_out'])}" if res["left_out"] else ""))
for x in res["left_out"]:
    print(f"  left out {x['file']}: {x['reason']}")
PY
if [ "${REPORT:-1}" != 0 ]; then
  uqbench report "$dest"
fi
