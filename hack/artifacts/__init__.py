"""Real stores holding real (tiny) checkpoints, for the preflight artifact check's tests.

- `checkpoints`: writes checkpoints the way quantizers leave them: safetensors shards written by
  the `safetensors` package, an index, config.json with each format's quantization_config,
  tokenizer files;
- `s3`: versitygw (an S3 gateway over a directory, built once from the Go module proxy by
  `hack/tools.sh versitygw`), which checks SigV4 signatures like S3 does;
- `hub`: a minimal Hugging Face Hub endpoint (resolve URLs with ranges, `/api/models`), ours,
  and so judged by the official `huggingface_hub` client in the tests.
"""
