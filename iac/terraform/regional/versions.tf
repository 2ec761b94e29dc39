# The regional stack of the payments service, applied once per region, each region in its own
# workspace (drkit names them after the region). State lives in an S3 bucket with DynamoDB
# locking in a THIRD region, so losing the primary region never loses the state: the backend's
# settings are given at init (-backend-config, drkit's community.general.terraform task).
terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
  backend "s3" {}
}

# Endpoints come from the standard AWS_ENDPOINT_URL* environment variables (the lab points them
# at its moto server); a real account sets none, and the module is the same.
provider "aws" {
  region                      = var.region
  skip_credentials_validation = var.emulated
  skip_requesting_account_id  = var.emulated
  skip_metadata_api_check     = var.emulated
  skip_region_validation      = var.emulated
}
