"""Sluice's inference-log receiver: KServe payload-logger CloudEvents in, Parquet in S3 out.

A service of its own (`python -m serving.inference_log`, image serving/inference_log/Dockerfile):
the InferenceService's `spec.predictor.logger` (and, locally, the stand-in's router) posts every
request and response here; they are joined by ce-id and stored under
`s3://<bucket>/inference-log/model=<m>/version=<v>/date=<d>/` (layout.py). `reader.read_log` reads
them back as a DataFrame (it needs pandas, which the receiver's image does not have).
"""
