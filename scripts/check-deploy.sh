#!/usr/bin/env bash
# Validates the deployment files offline, with the tools their formats come
# with (scripts/setup.sh installs them): the Swarm stack with the docker
# client, the Compose files with docker-compose, the Dockerfile with
# hadolint, Prometheus' configuration and rules with promtool,
# Alertmanager's with amtool, the shell scripts with shellcheck, the
# Kubernetes overlays with kubectl kustomize and scripts/k8s-validate.py,
# the GitHub workflows with scripts/lint-workflows.sh. The
# cross-checks between the files and the code are a cargo test
# (services/fantasy/tests/packaging.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/hadolint/bin:$PATH"

step() { printf '\033[1mcheck-deploy:\033[0m %s\n' "$*" >&2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "docker stack config -c compose/stack.yml"
docker stack config -c compose/stack.yml >"$tmp/stack.yml"

step "docker-compose config (one host, and with the GPU override)"
(
  cd compose
  docker-compose -f docker-compose.yml config -q
  docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
)

step "hadolint docker/Dockerfile compose/offline/*/Dockerfile"
hadolint docker/Dockerfile compose/offline/*/Dockerfile

step "promtool: alert rules and both Prometheus configurations"
promtool check rules compose/prometheus/alerts.yml >/dev/null
cp compose/prometheus/alerts.yml "$tmp/alerts.yml"
for config in prometheus.yml prometheus.swarm.yml; do
  # The rules are mounted at /etc/prometheus in the containers.
  sed "s#/etc/prometheus/alerts.yml#$tmp/alerts.yml#" "compose/prometheus/$config" >"$tmp/$config"
  promtool check config "$tmp/$config" >/dev/null
done

step "amtool check-config"
amtool check-config compose/alertmanager/alertmanager.yml >/dev/null

step "shellcheck"
shellcheck compose/make-secrets.sh compose/kafka/create-topics.sh scripts/*.sh loadtest/*.sh \
  docker/*.sh compose/offline/*.sh compose/offline/*/*.sh compose/offline/tansu/tansu-healthcheck

step "the offline stack's override merges into a stack docker accepts"
docker stack config -c compose/stack.yml >"$tmp/resolved.yml"
COLLECTOR_SOURCES=sim:nba python3 compose/offline/merge.py "$tmp/resolved.yml" \
  compose/offline/stack.override.yml >"$tmp/offline.yml"
docker stack config -c "$tmp/offline.yml" >/dev/null

step "Kubernetes: every overlay rendered and validated (Kubernetes 1.30 and 1.37, the operators' CRD schemas)"
python3 scripts/k8s-validate.py deploy/k8s/overlays/* deploy/argocd/fantasy.yaml
# ...and it can fail: a Deployment with a misspelt field, a ScaledObject
# with a number where KEDA wants a string, a kind nobody defines.
mkdir -p "$tmp/bad"
printf 'resources: [bad.yaml]\n' >"$tmp/bad/kustomization.yaml"
cat >"$tmp/bad/bad.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: x, image: x, imagePullPolicyy: Always}]}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  triggers: [{type: kafka, metadata: {lagThreshold: 5}}]
---
apiVersion: example.com/v1
kind: Nobody
metadata: {name: x}
EOF
if python3 scripts/k8s-validate.py "$tmp/bad" >"$tmp/bad.out" 2>&1; then
  echo "check-deploy: k8s-validate.py accepted invalid objects" >&2
  exit 1
fi
for expected in 'unknown field "imagePullPolicyy"' 'lagThreshold: expected string' 'unknown kind example.com/v1 Nobody'; do
  grep -qF "$expected" "$tmp/bad.out" || {
    cat "$tmp/bad.out" >&2
    echo "check-deploy: k8s-validate.py did not report: $expected" >&2
    exit 1
  }
done

step "GitHub workflows: scripts/lint-workflows.sh"
bash scripts/lint-workflows.sh

step "dashboards are JSON, the Python scripts compile"
for dashboard in compose/grafana/dashboards/*.json; do
  python3 -m json.tool "$dashboard" >/dev/null
done
for script in docker/ort-extract.py compose/offline/merge.py scripts/stackcheck.py compose/offline/s3/make-bucket \
  scripts/k8s-validate.py deploy/k8s/schemas/extract.py; do
  python3 -m py_compile "$script"
done
find docker compose scripts deploy -name __pycache__ -type d -prune -exec rm -rf {} +

step "ok"
