#!/usr/bin/env bash
# Wheels for bench/gpu_run.sh: the packages an offline GPU machine with Python 3.12, torch and transformers lacks
# (DeepSpeed and its needs, jsonschema for `ftc compile`, liger-kernel, ftc itself), fetched here into .whl/.
# Versions are the images' pins (images/versions.txt). .whl/ is ignored by git, not committed.
# PYTHON_VERSION (default 3.12) picks the interpreter the binary wheels are for.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
rm -rf "$dest" && mkdir -p "$dest"
mkdir -p .git/info && { grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude; }
pin() { grep -i -E "^$1==" images/versions.txt; }
binary=(--only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps "${binary[@]}" -d "$dest" \
    "$(pin hjson)" "$(pin pydantic)" "$(pin pydantic_core)" "$(pin annotated-types)" "$(pin typing-inspection)" \
    "$(pin typing_extensions)" "$(pin jsonschema)" "$(pin jsonschema-specifications)" "$(pin referencing)" \
    "$(pin rpds-py)" liger-kernel==0.8.5
python3 -m pip wheel -q --no-deps -w "$dest" "$(pin deepspeed)" .  # pure Python: ops compile on first use
rm -rf build ftc.egg-info  # what building ftc's wheel leaves in the checkout
ls -l "$dest"
