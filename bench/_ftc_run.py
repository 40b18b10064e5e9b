"""`ftc run PLAN` in this process, then its peak memory: used by bench/train_bench.py.

python bench/_ftc_run.py PLAN RESULT.json
"""

import json
import resource
import sys
import time

start = time.time()
from ftc.cli import main  # noqa: E402  (the clock starts before the imports, as for `ftc run`)

code = main(["run", sys.argv[1]])
result = {"start": start, "code": code, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
    result["peak_gpu_bytes"] = sys.modules["torch"].cuda.max_memory_allocated()
with open(sys.argv[2], "w") as f:
    json.dump(result, f)
sys.exit(code)
