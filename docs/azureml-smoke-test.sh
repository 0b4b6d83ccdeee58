#!/usr/bin/env bash
# Smoke test of himl-manifest against a real Azure ML workspace: the CLI loop of
# tests/backends/azureml/test_cli_e2e.py, in a fresh repository of its own (docs/azureml.md).
#
#   docs/azureml-smoke-test.sh <cluster> [path/to/config.json]
#
# Needs: `himl` on PATH (or HIML=/path/to/himl) with the azure extra, git, your `az login`
# (or any credential azure-identity's default chain finds), and a workspace: the config.json
# downloaded from its page in Azure ML Studio, or AZUREML_SUBSCRIPTION_ID,
# AZUREML_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME. Its jobs are tiny (one epoch of
# HelloWorld on the cluster's CPU or GPU); it archives them at the end. The jobs run the copy of
# himl_manifest this script sits beside (its src/himl_manifest is put in the code snapshot), so
# the environment installs only what that code needs.
set -euo pipefail

cluster=${1:?usage: $0 <cluster> [path/to/config.json]}
config=${2:-}
himl=${HIML:-himl}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/himl-smoke-XXXXXX")
repo="$work/lab"
echo "smoke test in $repo (cluster $cluster)"

step() { printf '\n== %s\n' "$*"; }
run() { echo "+ $*"; "$@"; }

mkdir -p "$repo/experiments"
cd "$repo"
git init -q -b main
git config user.email "${GIT_AUTHOR_EMAIL:-smoke-test@example.org}"
git config user.name "himl smoke test"
if [ -n "$config" ]; then
  cp "$config" config.json
elif [ -z "${AZUREML_WORKSPACE_NAME:-}" ]; then
  echo "no workspace: give config.json as the second argument, or set AZUREML_*" >&2
  exit 1
fi
cp -r "$here/src/himl_manifest" himl_manifest
mkdir -p himl_manifest/_schema
cp "$here/schema/experiment.v1.schema.json" himl_manifest/_schema/
cat > environment.yml <<'EOF'
name: himl-smoke
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - pip:
      - torch==2.5.1
      - pytorch-lightning>=2.2,<2.7
      - mlflow-skinny>=3,<4
      - azureml-mlflow>=1.60
      - PyYAML>=6
      - jsonschema>=4.20
      - click>=8.1
      - GitPython>=3.1.40
EOF
cat > .gitignore <<'EOF'
outputs/
EOF
cat > experiments/hello.yaml <<EOF
apiVersion: himl/v1
kind: Experiment
name: smoke-hello
description: himl-manifest smoke test
container: HelloWorld
seeds: [0]
trainer: {max_epochs: 1, devices: 1}
compute: {target: $cluster, max_run_duration: 1h}
EOF
cat > experiments/finetune.yaml <<EOF
apiVersion: himl/v1
kind: Experiment
name: smoke-finetune
container: HelloWorld
seeds: [0]
trainer: {max_epochs: 1, devices: 1}
checkpoint: {source: {experiment: smoke-hello}}
compute: {target: $cluster, max_run_duration: 1h}
EOF
git add -A && git commit -q -m "smoke test"

step "validate, plan: two creates, the fine-tune waits for its upstream"
run "$himl" validate experiments
run "$himl" plan --no-color

step "apply --wait: the code uploaded, the first job, then the deferred fine-tune"
run "$himl" apply --yes --wait

step "an update in place: a description"
sed -i.bak 's/^description: .*/description: himl-manifest smoke test, updated/' experiments/hello.yaml
rm -f experiments/hello.yaml.bak
git commit -q -am "describe"
run "$himl" apply --yes

step "in sync: No changes."
run "$himl" plan --detailed-exitcode --no-color

step "clean up: archive the smoke test's jobs (never deleted)"
git rm -q experiments/hello.yaml experiments/finetune.yaml
mkdir -p experiments  # an empty manifests folder: every run is an orphan
git commit -q -m "done"
run "$himl" apply --yes --prune
echo
echo "smoke test passed ($repo)"
