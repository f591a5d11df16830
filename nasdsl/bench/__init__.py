"""Deployment speed on the CPU: which engine and precision run a spec fastest, still
computing the same function, and a latency model that predicts it without building.

- :mod:`~nasdsl.bench.hardware`: what this CPU can do (bf16, AMX, VNNI), and its identity;
- :mod:`~nasdsl.bench.data`: the inputs that calibrate int8 and evaluate agreement;
- :mod:`~nasdsl.bench.artifacts`: the artifact of each deployment target (what ``nasdsl
  compile --optimize-for`` writes and what the bench measures: the same bytes);
- :mod:`~nasdsl.bench.engines`: each engine's runner (PyTorch eager and ``torch.compile``,
  ONNX Runtime, OpenVINO);
- :mod:`~nasdsl.bench.measure`: the interleaved measurement, the table, the fastest
  configuration within a tolerance;
- :mod:`~nasdsl.bench.latency` and :mod:`~nasdsl.bench.calibrate`: the latency model, its
  per-machine calibration and cache.

See docs/deploy.md.
"""
