"""Preflight: what is checked before a target tier gets its first user request.

The building blocks, each usable on its own (the rollout's `preflight` step wires them in):
- the artifact check (`artifact` pure judging, `safetensors` header parsing, `readers` for
  s3://, gs://, hf:// and pvc://, `gather` that reads an artifact through a reader, `result`
  that fits the verdict into a Job's termination message);
- the benchmark (`load` drives the same load at two OpenAI-compatible endpoints, `stats` and
  `gate` turn what it measured into verdicts, pure);
- the quality probe (`probe` reads prompts from a ConfigMap's data and compares greedy answers,
  pure; `load` asks both tiers).
"""
