"""One load-benchmark process: ``python -m benchmarks.load_child POLICY STAGE SECONDS``
(SECONDS 0: run until killed). The policy is set here, before anything loads torch:
**before** = torch first, with OpenMP's default wait policy and ONNX Runtime spinning;
**gmatch** = ``import gmatch`` first (gmatch.threads)."""

import json
import os
import sys

POLICY = sys.argv[1] if __name__ == "__main__" else "gmatch"
if POLICY == "before":
    os.environ.pop("OMP_WAIT_POLICY", None)
    import torch  # noqa: F401 - OpenMP starts with its default wait policy

# isort: off
import gmatch.encoders.exported as exported  # noqa: E402 - after the policy above
import gmatch.encoders.ocr as ocr  # noqa: E402
import gmatch.threads as threads  # noqa: E402
from benchmarks.load_stages import run_stage  # noqa: E402

# isort: on

if POLICY == "before":  # nor ONNX Runtime's no-spin options
    threads.ort_no_spin = exported.ort_no_spin = ocr.ort_no_spin = lambda opts: None


def main(argv: list[str]) -> int:
    stage, seconds = argv[1], float(argv[2])
    if seconds <= 0:
        while True:
            run_stage(stage, 60.0)
    print(json.dumps({"rate": run_stage(stage, seconds)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
