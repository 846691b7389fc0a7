#!/usr/bin/env bash
# Proves that tenant-quota-rules.test.yaml can fail: each mutant breaks one rule of
# tenant-quota-rules.yaml in a copy (a threshold, a guard, a `for:`, a range, a metric
# name), and `promtool test rules` must then fail. A mutant that leaves the file unchanged
# (the rule was edited since) or that the tests do not catch fails this script.
# Usage: deploy/prometheus/mutants.sh   (run by `make observability-test`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/tenant-quota-rules.test.yaml" "$work/"

# "<what it breaks>|<sed expression>"
mutants=(
  'NearLimit: no activity guard (a stale 0 fires)|s/(rate(quota_checks_total\[5m\])) > 0/(rate(quota_checks_total[5m])) >= 0/'
  'NearLimit: 80 % crossings count|s/threshold=~"9\[0-9\]/threshold=~"[89][0-9]/'
  'NearLimit: metric renamed|s/max by (instance, tenant_id, scope, scope_id, resource) (quota_remaining)/max by (instance, tenant_id, scope, scope_id, resource) (quota_remaining_units)/'
  'Throttled: threshold 50 %|s/^      > 0.05$/      > 0.5/'
  'Throttled: grouped without scope labels|s/sum by (tenant_id, scope, scope_id, resource) (rate(quota_throttles_total/sum by (tenant_id, resource) (rate(quota_throttles_total/'
  'SaturationCritical: elevated counts|s/(saturation_level) >= 2/(saturation_level) >= 1/'
  'GlobalDegraded: for 5m|/alert: TenantQuotaGlobalDegraded/,/for:/s/for: 2m/for: 5m/'
  'GlobalDrifting: a steady backlog fires|s/deriv(quota_global_pending_units\[10m\]) > 0/deriv(quota_global_pending_units[10m]) >= 0/'
  'WebhookFailures: range 5m|s/increase(quota_alert_webhook_errors_total\[15m\])/increase(quota_alert_webhook_errors_total[5m])/'
  'Errors: for 10m|/alert: TenantQuotaErrors/,/for:/s/for: 5m/for: 10m/'
  'Errors: wrong severity|/alert: TenantQuotaErrors/,/severity:/s/severity: critical/severity: warning/'
)

failed=0
for m in "${mutants[@]}"; do
  what=${m%%|*}
  expr=${m#*|}
  sed -e "$expr" "$here/tenant-quota-rules.yaml" > "$work/tenant-quota-rules.yaml"
  if cmp -s "$here/tenant-quota-rules.yaml" "$work/tenant-quota-rules.yaml"; then
    echo "MUTANT NOT APPLIED (rule changed?): $what"; failed=1; continue
  fi
  if (cd "$work" && promtool test rules tenant-quota-rules.test.yaml >/dev/null 2>&1); then
    echo "MUTANT SURVIVED (the tests miss it): $what"; failed=1
  else
    echo "caught: $what"
  fi
done
exit $failed
