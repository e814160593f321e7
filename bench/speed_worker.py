"""One worker process of bench/bench_speed.py: builds one workload of one implementation,
warms it up, then runs single steps on request.

A process per implementation and workload keeps each one's peak RSS its own and lets
TensorFlow's backend settings differ between workers (they are read when it loads).
Protocol, one JSON object per line: the worker writes {"info", "flops"} once ready, then
answers each {"run": precision} on stdin with {"seconds"} and {"rss": true} with
{"peak_rss_mb"}; it exits at the end of stdin.
"""

import argparse
import json
import os
import resource
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("tf", "hf"), required=True)
    parser.add_argument("--backend", choices=("auto", "tf-default"), default="auto",
                        help="tf: util/cpu_setup.py's settings, or TensorFlow's own")
    parser.add_argument("--workload", choices=("matmul", "pretrain", "finetune", "inference"),
                        required=True)
    parser.add_argument("--precisions", default="float32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    parser.add_argument("--hparams", default="{}")
    parser.add_argument("--info", default="{}", help="hf: the tf worker's info (configs)")
    return parser.parse_args(argv)


def load_side(args):
    """Imports the implementation's module, with the backend set up first."""
    sys.path.insert(0, REPO)
    if args.impl == "tf":
        if args.backend == "auto":
            import util.cpu_setup  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import speed_tf  # pylint: disable=import-outside-toplevel
        return speed_tf
    # transformers imports TensorFlow when it is installed unless told not to; here it
    # would only add memory and threads to the PyTorch worker.
    os.environ["USE_TF"] = "0"
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    import speed_hf  # pylint: disable=import-outside-toplevel
    return speed_hf


def main():
    args = parse_args()
    # The protocol gets its own copy of stdout; anything else printed goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    side = load_side(args)
    info = side.describe(args)
    steps, flops = {}, {}
    for precision in args.precisions.split(","):
        if args.impl == "tf":
            steps[precision], flops[precision] = side.build(args.workload, precision, args)
        else:
            steps[precision] = side.build(args.workload, precision, args,
                                          json.loads(args.info))
        for _ in range(args.warmup):
            steps[precision]()
    protocol.write(json.dumps({"info": info, "flops": flops}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if "run" in command:
            start = time.perf_counter()
            steps[command["run"]]()
            reply = {"seconds": time.perf_counter() - start}
        else:  # Linux reports ru_maxrss in KiB
            reply = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
