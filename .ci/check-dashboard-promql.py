#!/usr/bin/env python3
"""Parse every PromQL query of a Grafana dashboard with promtool.

Grafana's own variables are replaced by values of their kind ($__rate_interval by 5m; a $var
inside a label matcher's string stays as it is, which is valid PromQL), each query becomes a
recording rule of a temporary rules file, and `promtool check rules` parses them all. Exit 1
naming the query when one does not parse. (Which metrics the queries name is checked against
the code by tests/it/deploy_kit.rs.)

Usage: check-dashboard-promql.py DASHBOARD.json
"""
import json
import re
import subprocess
import sys
import tempfile

GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def queries(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for value in node.values():
            yield from queries(value)
    elif isinstance(node, list):
        for value in node:
            yield from queries(value)


def main(path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    exprs = list(queries(dash["panels"]))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["definition"])
            if not m:
                sys.exit(f"{path}: variable {var['name']}: expected label_values(metric, label)")
            exprs.append(m.group(1))
    if not exprs:
        sys.exit(f"{path}: no queries found")
    rules = []
    for i, expr in enumerate(exprs):
        text = expr
        for var, value in GRAFANA_RANGES.items():
            text = text.replace(var, value)
        rules.append({"record": f"ferry_dashboard:query_{i}", "expr": text})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", encoding="utf-8") as f:
        # JSON is YAML: no YAML library needed.
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        f.flush()
        result = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        for m in re.finditer(r"query_(\d+)", result.stdout + result.stderr):
            print(f"in: {exprs[int(m.group(1))]}", file=sys.stderr)
        sys.exit(f"{path}: a query does not parse")
    print(f"{path}: {len(exprs)} queries parse")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
