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
  bucket        = var.data_bucket
  force_destroy = var.force_destroy
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
