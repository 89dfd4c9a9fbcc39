terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }

  # The state path is given at init time (-backend-config=path=<state_dir>/terraform/storage.tfstate)
  # so that no state is ever written into the repository.
  backend "local" {}
}
