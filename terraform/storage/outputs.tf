output "models_bucket" {
  description = "Name of the models (MLflow artifact root) bucket."
  value       = aws_s3_bucket.models.bucket
}

output "data_bucket" {
  description = "Name of the data and inference-log bucket."
  value       = aws_s3_bucket.data.bucket
}
