#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Checks herdwatch's alerting rules without a cluster:
#   - promtool check rules on charts/herdwatch/rules/herdwatch.rules.yaml;
#   - promtool test rules on charts/herdwatch/rules/tests/*.yaml (each alert fires on the
#     input it is about, and stays quiet on normal input);
#   - the chart's PrometheusRule (metrics.prometheusRule.enabled) renders exactly the groups
#     of the rules file, and runbookBaseURL prefixes every runbook_url;
#   - every runbook_url names a section of README.md that exists.
# Installs Debian's Prometheus (for promtool) when it is missing.
# Usage: scripts/rules-test.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../e2e/cluster/lib/common.sh
source "$REPO/e2e/cluster/lib/common.sh"
CHART="$REPO/charts/herdwatch"
RULES="$CHART/rules/herdwatch.rules.yaml"
HELM=$(cached_bin helm)
[[ -x $HELM ]] || die "helm is not built ($HELM): run bash e2e/cluster/cluster.sh build"

"$REPO/scripts/install-prometheus.sh"
command -v promtool >/dev/null || die "promtool is missing although scripts/install-prometheus.sh ran"
if ! python3 -c 'import yaml' 2>/dev/null; then
  [[ $(id -u) -eq 0 ]] || die "python3-yaml is missing: sudo apt-get install -y python3-yaml"
  apt-get install -y -qq python3-yaml >/dev/null
fi

failures=0
pass() { printf '[rules-test] ok   %s\n' "$*"; }
fail() { printf '[rules-test] FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }
# run <what> <command...>: runs the command, shows its output only when it fails.
run() {
  local what=$1 out; shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what:"; echo "$out" >&2; fi
}

run "promtool check rules ${RULES#"$REPO"/}" promtool check rules "$RULES"
mapfile -t tests < <(find "$CHART/rules/tests" -name '*.yaml' | sort)
((${#tests[@]})) || fail "no rule tests in ${CHART#"$REPO"/}/rules/tests"
for t in "${tests[@]}"; do
  run "promtool test rules ${t#"$REPO"/}" promtool test rules "$t"
done

render() {
  "$HELM" template herdwatch "$CHART" -n herdwatch --set metrics.prometheusRule.enabled=true \
    --show-only templates/prometheusrule.yaml "$@"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render >"$tmp/default.yaml"
render --set metrics.prometheusRule.runbookBaseURL=https://docs.example.org/herdwatch/ >"$tmp/based.yaml"

# compare <rendered> <prefix>: the rendered PrometheusRule's groups equal the rules file's,
# with <prefix> before every runbook_url.
compare() {
  python3 - "$RULES" "$1" "$2" <<'PY'
import sys, yaml
rules_path, rendered_path, prefix = sys.argv[1:]
with open(rules_path) as f:
    want = yaml.safe_load(f)
with open(rendered_path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
rule_objects = [d for d in docs if d.get("kind") == "PrometheusRule"]
if len(rule_objects) != 1:
    sys.exit(f"expected one PrometheusRule, rendered {len(rule_objects)}")
got = rule_objects[0]["spec"]
for group in want["groups"]:
    for rule in group["rules"]:
        notes = rule.get("annotations", {})
        if "runbook_url" in notes:
            notes["runbook_url"] = prefix + notes["runbook_url"]
if got != want:
    import difflib
    a = yaml.safe_dump(want, sort_keys=True).splitlines()
    b = yaml.safe_dump(got, sort_keys=True).splitlines()
    sys.exit("\n".join(difflib.unified_diff(a, b, "rules file", "PrometheusRule", lineterm="")))
PY
}
run "the PrometheusRule holds exactly the groups of the rules file" compare "$tmp/default.yaml" ""
run "runbookBaseURL prefixes every runbook_url" \
  compare "$tmp/based.yaml" "https://docs.example.org/herdwatch/"

# Every runbook_url is README.md#<anchor> and README.md has a heading with that anchor
# (GitHub's: lower case, spaces to dashes, punctuation dropped).
readme_anchors() {
  python3 - "$REPO/README.md" "$RULES" <<'PY'
import re, sys, yaml
readme, rules = sys.argv[1:]
anchors = set()
with open(readme) as f:
    for line in f:
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
with open(rules) as f:
    doc = yaml.safe_load(f)
missing = []
for group in doc["groups"]:
    for rule in group["rules"]:
        url = rule.get("annotations", {}).get("runbook_url", "")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                missing.append(f"{rule['alert']}: no {key} annotation")
        if not url.startswith("README.md#"):
            missing.append(f"{rule['alert']}: runbook_url {url!r} is not README.md#<section>")
        elif url.split("#", 1)[1] not in anchors:
            missing.append(f"{rule['alert']}: README.md has no section #{url.split('#', 1)[1]}")
if missing:
    sys.exit("\n".join(missing))
PY
}
run "every alert has a summary, a description and a runbook section in README.md" readme_anchors

if ((failures)); then
  echo "[rules-test] $failures check(s) failed" >&2
  exit 1
fi
echo "[rules-test] all checks passed"
