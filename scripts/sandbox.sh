#!/usr/bin/env bash
# Local sandbox: the repository's test API server, moto and kaws, with examples/ applied.
#   scripts/sandbox.sh up     start everything (idempotent: restarts what is running)
#   scripts/sandbox.sh down   stop everything it started
# State lives in target/sandbox: kubeconfig, aws.env, logs and pid files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/target/sandbox"
MOTO_PORT=${MOTO_PORT:-15000}
KAWS_METRICS_PORT=${KAWS_METRICS_PORT:-18080}
REGION=${AWS_REGION:-eu-west-1}

stop() {
  for name in kaws moto apiserver; do
    pidfile="$dir/$name.pid"
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$pidfile"
    fi
  done
}

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "sandbox: $what did not come up; logs are in $dir" >&2
  exit 1
}

up() {
  "$root/scripts/install-tools.sh"
  mkdir -p "$dir"
  stop
  # A failed start leaves nothing running behind it.
  trap 'echo "sandbox: start failed; stopping what was started" >&2; stop' ERR
  # The same build as `make build` / `make test`: a narrower one (`-p kaws --bin kaws`) resolves
  # other dependency features and recompiles the AWS SDKs for minutes.
  (cd "$root" && cargo build -q --workspace --all-targets)

  "$root/target/debug/kaws-testserver" --kubeconfig "$dir/kubeconfig" --crds "$root/crds" \
    >"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
  wait_for "the API server" env KUBECONFIG="$dir/kubeconfig" kubectl get namespace default

  "$root/.tools/venv/bin/python" "$root/tests/e2e/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" \
    >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  wait_for "moto" bash -c "exec 3<>/dev/tcp/127.0.0.1/$MOTO_PORT"

  cat >"$dir/aws.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=$REGION
export KUBECONFIG=$dir/kubeconfig
ENV

  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
  KAWS_KUBECONFIG="$dir/kubeconfig" KAWS_AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
  KAWS_AWS_REGION="$REGION" KAWS_METRICS_ADDR="127.0.0.1:$KAWS_METRICS_PORT" KAWS_RESYNC_PERIOD=1m \
    "$root/target/debug/kaws" run >"$dir/kaws.log" 2>&1 &
  echo $! >"$dir/kaws.pid"
  wait_for "kaws" bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAWS_METRICS_PORT && curl -sf http://127.0.0.1:$KAWS_METRICS_PORT/readyz"

  export KUBECONFIG="$dir/kubeconfig"
  # shellcheck disable=SC1091
  source "$dir/aws.env"
  py="$root/.tools/venv/bin/python"
  "$py" "$root/scripts/sandbox_aws.py" role
  # Only kaws' own kinds: the test API server serves no apps/v1 (examples also show how an app
  # consumes a connection Secret).
  # The Instance example names a real AMI; moto knows other ids, so it gets one of moto's.
  SANDBOX_AMI="$("$py" "$root/scripts/sandbox_aws.py" ami)" \
  "$py" - "$root"/examples/*.yaml <<'PY' | kubectl apply -f -
import json, os, sys, yaml
docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]
items = [d for d in docs if d.get("apiVersion", "").split("/")[0].endswith(".kaws.io")]
for d in items:
    if d.get("kind") == "Instance":
        d["spec"]["imageId"] = os.environ["SANDBOX_AMI"]
# JSON, not YAML: re-emitted YAML would lose the quotes that keep "N" a string.
print("\n---\n".join(json.dumps(d) for d in items))
PY
  kubectl wait --for=condition=Ready bucket/function-code --timeout=120s
  "$py" "$root/scripts/sandbox_aws.py" code
  for kind in $(kubectl api-resources --categories=aws -o name); do
    kubectl wait --for=condition=Ready "$kind" --all --timeout=120s
  done
  kubectl get aws
  trap - ERR
  echo
  echo "sandbox is up. Use it with:  source $dir/aws.env"
  echo "  kubectl get aws;  aws s3 ls;  metrics: http://127.0.0.1:$KAWS_METRICS_PORT/metrics"
  echo "  logs: $dir/*.log;  stop with: make sandbox-down"
}

case "${1:-}" in
  up) up ;;
  down) stop; echo "sandbox stopped" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
