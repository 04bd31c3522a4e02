#!/usr/bin/env bash
# For a task lent a GPU machine: the wheels it lacks for `python -m benchmarks gpu` (parts 1 and 2;
# its image has Python 3.12 with torch, numpy, scikit-learn, pandas, PyYAML, safetensors, rich, but
# not pydantic or mlxtend), downloaded here into .whl/ (git-ignored through .git/info/exclude), at
# the versions installed here. Then, through the device tool, with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 -m benchmarks gpu
# and copy benchmarks/results/gpu.json and gpu.md back through $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
pins=()
for pkg in pydantic pydantic-core annotated-types typing-inspection mlxtend; do
  pins+=("$pkg==$(version "$pkg")")
done
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls -l .whl
