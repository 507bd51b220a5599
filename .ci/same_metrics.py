"""Exit 1 unless two results files hold identical metrics for the same runs."""

import json
import sys

a, b = (json.load(open(p)) for p in sys.argv[1:3])
key = lambda r: (r["method"], r["task"], r["seed"])  # noqa: E731
ma = {key(r): r["metrics"] for r in a["runs"]}
mb = {key(r): r["metrics"] for r in b["runs"]}
if ma.keys() != mb.keys():
    sys.exit(f"different runs: {sorted(ma.keys() ^ mb.keys())}")
diff = [k for k in ma if json.dumps(ma[k], sort_keys=True) != json.dumps(mb[k], sort_keys=True)]
if diff:
    sys.exit(f"metrics differ between two runs with the same seeds: {diff}")
print(f"identical metrics for all {len(ma)} runs")
