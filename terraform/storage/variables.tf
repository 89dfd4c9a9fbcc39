variable "region" {
  description = "AWS region of the buckets."
  type        = string
  default     = "us-east-1"
}

variable "s3_endpoint" {
  description = "S3 endpoint override, e.g. http://127.0.0.1:4566 for LocalStack. Empty means real AWS."
  type        = string
  default     = ""
}

variable "access_key" {
  description = "AWS access key id. Null lets the provider use its usual chain (env, profile, role)."
  type        = string
  default     = null
  sensitive   = true
}

variable "secret_key" {
  description = "AWS secret access key. Null lets the provider use its usual chain (env, profile, role)."
  type        = string
  default     = null
  sensitive   = true
}

variable "models_bucket" {
  description = "Bucket holding MLflow artifacts (the models KServe downloads). Versioned."
  type        = string
  default     = "sluice-models"
}

variable "data_bucket" {
  description = "Bucket holding training data and inference (payload) logs."
  type        = string
  default     = "sluice-data"
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets (fine locally, keep false on AWS)."
  type        = bool
  default     = false
}
