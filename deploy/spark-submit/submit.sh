#!/usr/bin/env bash
# Submit one seglib job (jobs/<JOB>.py) with spark-submit: YARN, Kubernetes, standalone or local-cluster.
#
#   deploy/spark-submit/submit.sh JOB [seg options ...]
#   SEG_MASTER=yarn SEG_CONFIG=conf/retail.yaml deploy/spark-submit/submit.sh features --set features.snapshot_date=2025-09-30
#
# Settings (environment):
#   SEG_MASTER            yarn | k8s://https://HOST:PORT | spark://HOST:PORT | local-cluster[N,CORES,MB]   (required)
#   SEG_DEPLOY_MODE       client | cluster (default: cluster on yarn and k8s, client otherwise)
#   SEG_CONFIG            YAML config shipped with the job (default: conf/default.yaml)
#   SEG_ENV_ARCHIVE       a packed venv (deploy/spark-submit/package.sh): executors run environment/bin/python.
#                         Leave empty when executors already have the stack (the deploy/docker image).
#   SEG_EXECUTORS, SEG_EXECUTOR_CORES, SEG_EXECUTOR_MEMORY, SEG_DRIVER_MEMORY
#   SEG_GPUS_PER_EXECUTOR GPUs per executor for training (adds the resource amounts and a discovery script)
#   SEG_K8S_IMAGE         image for driver and executors on Kubernetes (deploy/docker)
#   SEG_EXTRA_ARGS        more spark-submit arguments, e.g. "--conf spark.yarn.queue=ml"
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
job="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
entry="$repo/jobs/$job.py"
[[ -f "$entry" ]] || { echo "submit.sh: no job $job (expected $entry)" >&2; exit 2; }
: "${SEG_MASTER:?set SEG_MASTER (yarn, k8s://..., spark://..., local-cluster[2,1,2048])}"
config="${SEG_CONFIG:-$repo/conf/default.yaml}"
[[ -f "$config" ]] || { echo "submit.sh: config $config not found" >&2; exit 2; }

case "$SEG_MASTER" in
  yarn|k8s://*) mode="${SEG_DEPLOY_MODE:-cluster}" ;;
  *) mode="${SEG_DEPLOY_MODE:-client}" ;;
esac

python="${PYTHON:-$repo/.venv/bin/python}"
spark_submit="${SPARK_SUBMIT:-$(dirname "$python")/spark-submit}"
# spark-submit (pip's PySpark) finds its Spark home with the first python3 on PATH.
export PATH="$(dirname "$python"):$PATH"
if [[ -z "${SEG_ENV_ARCHIVE:-}" && "$SEG_MASTER" == local* ]]; then
  # Local workers run this machine's venv; on a cluster the archive or the image provides Python.
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$python}"
fi
delta_package="$("$python" -c 'from seglib.platform.session import delta_package_coordinates as c; print(c())')"

# The library, shipped to the driver and executors (the jobs import seglib).
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
(cd "$repo" && zip -qr "$build/seglib.zip" seglib -x '*/__pycache__/*')

args=(
  --master "$SEG_MASTER" --deploy-mode "$mode" --name "seglib-$job"
  --packages "$delta_package"
  --py-files "$build/seglib.zip"
  --conf spark.sql.session.timeZone=UTC
)
files="$config"
[[ -n "${SEG_EXECUTORS:-}" ]] && args+=(--num-executors "$SEG_EXECUTORS")
[[ -n "${SEG_EXECUTOR_CORES:-}" ]] && args+=(--executor-cores "$SEG_EXECUTOR_CORES")
[[ -n "${SEG_EXECUTOR_MEMORY:-}" ]] && args+=(--executor-memory "$SEG_EXECUTOR_MEMORY")
[[ -n "${SEG_DRIVER_MEMORY:-}" ]] && args+=(--driver-memory "$SEG_DRIVER_MEMORY")
if [[ -n "${SEG_ENV_ARCHIVE:-}" ]]; then
  # Executors (and a cluster-mode driver) unpack the venv as ./environment and run its Python.
  args+=(--archives "$SEG_ENV_ARCHIVE#environment"
         --conf spark.pyspark.python=./environment/bin/python)
  [[ "$mode" == "client" ]] && args+=(--conf "spark.pyspark.driver.python=$python")
fi
if [[ -n "${SEG_GPUS_PER_EXECUTOR:-}" ]]; then
  # One Horovod rank per GPU: each task takes one GPU (set train.num_proc to the GPU count).
  args+=(--conf "spark.executor.resource.gpu.amount=$SEG_GPUS_PER_EXECUTOR"
         --conf spark.task.resource.gpu.amount=1
         --conf spark.executor.resource.gpu.discoveryScript=./gpu_discovery.sh)
  files+=",$repo/deploy/spark-submit/gpu_discovery.sh"
fi
if [[ "$SEG_MASTER" == k8s://* ]]; then
  : "${SEG_K8S_IMAGE:?set SEG_K8S_IMAGE to an image built from deploy/docker}"
  args+=(--conf "spark.kubernetes.container.image=$SEG_K8S_IMAGE")
fi
args+=(--files "$files")
# shellcheck disable=SC2206  # SEG_EXTRA_ARGS is meant to be split into words
[[ -n "${SEG_EXTRA_ARGS:-}" ]] && args+=($SEG_EXTRA_ARGS)

# In cluster mode the config arrives in the driver's working directory under its own name.
config_arg="$config"
[[ "$mode" == "cluster" ]] && config_arg="$(basename "$config")"

exec "$spark_submit" "${args[@]}" "$entry" --config "$config_arg" --set spark.master=null "$@"
