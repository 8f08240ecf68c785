"""How fast this machine multiplies matrices in int8 and in fp32 with onnxruntime, on a fixed thread count.

    .venv/bin/python bench/gemm_throughput.py --threads 2

A speed-up of an int8 model over a PyTorch fp32 one is bounded by the processor's int8 to fp32
throughput, which differs between processors of one family name (a virtual machine may say only
"AMD EPYC"). `compress bench` measures the same peaks in every run and sets each timing against them
(compress/timing/roofline.py); this prints them alone.
"""

from __future__ import annotations

import argparse

from compress.timing.roofline import describe_peaks, matmul_peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(describe_peaks(matmul_peaks(args.threads), args.threads))


if __name__ == "__main__":
    main()
