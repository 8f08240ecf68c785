"""Timing models on this machine: latencies (latency.py), MatMul work and peaks (roofline.py), and the CPU
load of other processes while timing (load.py). Below the stages: `quantize: {mode: best}` times its candidates."""
