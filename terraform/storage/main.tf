locals {
  # LocalStack (or any S3-compatible endpoint) is selected by setting s3_endpoint; real AWS leaves it empty.
  local_endpoint = var.s3_endpoint != ""
}

provider "aws" {
  region     = var.region
  access_key = var.access_key
  secret_key = var.secret_key

  # LocalStack has no STS/IMDS and accepts any credentials: skip the calls that would fail against it.
  s3_use_path_style           = local.local_endpoint
  skip_credentials_validation = local.local_endpoint
  skip_metadata_api_check     = local.local_endpoint
  skip_requesting_account_id  = local.local_endpoint
  skip_region_validation      = local.local_endpoint

  dynamic "endpoints" {
    for_each = local.local_endpoint ? [var.s3_endpoint] : []
    content {
      s3 = endpoints.value
    }
  }

  default_tags {
    tags = {
      project    = "sluice"
      managed-by = "terraform"
    }
  }
}

resource "aws_s3_bucket" "models" {
  # checkov:skip=CKV_AWS_18: Server access logs need a log bucket with its own retention and readers: part of the AWS account's logging setup (or CloudTrail S3 data events), not of this module; LocalStack writes none
  # checkov:skip=CKV_AWS_144: Cross-region replication needs a bucket in a second region and an IAM role; add it where regional disaster recovery is required (LocalStack has one region)
  # checkov:skip=CKV_AWS_145: Encrypted at rest with SSE-S3 (AES256, below); SSE-KMS adds a customer-managed key whose kms:Decrypt every reader (MLflow clients, the storage initializer) would need
  # checkov:skip=CKV2_AWS_62: Nothing consumes bucket events: MLflow, the storage initializer and the S3 mirror read the bucket directly, so a notification would have no target
  bucket        = var.models_bucket
  force_destroy = var.force_destroy
}

# Versioning keeps every artifact a registered model version points at recoverable after an overwrite.
resource "aws_s3_bucket_versioning" "models" {
  bucket = aws_s3_bucket.models.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "models" {
  bucket                  = aws_s3_bucket.models.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket" "data" {
  # checkov:skip=CKV_AWS_18: Server access logs need a log bucket with its own retention and readers: part of the AWS account's logging setup (or CloudTrail S3 data events), not of this module; LocalStack writes none
  # checkov:skip=CKV_AWS_144: Cross-region replication needs a bucket in a second region and an IAM role; add it where regional disaster recovery is required (LocalStack has one region)
  # checkov:skip=CKV_AWS_145: Encrypted at rest with SSE-S3 (AES256, below); SSE-KMS adds a customer-managed key whose kms:Decrypt every reader (MLflow clients, the storage initializer) would need
  # checkov:skip=CKV2_AWS_62: Nothing consumes bucket events: MLflow, the storage initializer and the S3 mirror read the bucket directly, so a notification would have no target
  bucket        = var.data_bucket
  force_destroy = var.force_destroy
}

# Training data and payload logs: an overwritten or deleted object stays recoverable, so what a
# model was trained on can still be found.
resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Encryption at rest with S3-managed keys: free on AWS and accepted by LocalStack.
resource "aws_s3_bucket_server_side_encryption_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Uploads that never completed (a training run killed mid-upload of a large artifact) keep their
# parts, billed and invisible, until aborted. Nothing else expires: versions stay recoverable.
resource "aws_s3_bucket_lifecycle_configuration" "models" {
  bucket     = aws_s3_bucket.models.id
  depends_on = [aws_s3_bucket_versioning.models]
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket     = aws_s3_bucket.data.id
  depends_on = [aws_s3_bucket_versioning.data]
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}
