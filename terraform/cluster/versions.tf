# Providers for the local Kind platform. Versions are pinned to a minor release line; there is
# no .terraform.lock.hcl in Git because the kind and helm providers cannot be downloaded on the
# machines this repository is developed on (see docs/cluster.md). Run `terraform init` once on a
# machine with registry access and commit the lock file it writes to pin exact builds.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    # Exactly 0.10.0: it embeds kind v0.30.0 (its go.mod), whose default node image is the one
    # variables.tf pins (Kubernetes 1.34.0). A newer provider embeds a newer kind, whose node images
    # differ: change the provider, the node image and terraform/cluster/compatibility.yaml together
    # (tests/test_cluster_versions.py checks they agree).
    kind = {
      source  = "tehcyx/kind"
      version = "0.10.0"
    }
    # v3 syntax: `kubernetes = { ... }` and `set = [ ... ]` are attributes, not blocks.
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
  }
}

provider "kind" {}

provider "helm" {
  kubernetes = {
    host                   = kind_cluster.this.endpoint
    client_certificate     = kind_cluster.this.client_certificate
    client_key             = kind_cluster.this.client_key
    cluster_ca_certificate = kind_cluster.this.cluster_ca_certificate
  }
}
