# ---- cluster ---------------------------------------------------------------------------------
variable "cluster_name" {
  description = "Name of the Kind cluster (also the kubectl context suffix: kind-<name>)."
  type        = string
  default     = "sluice"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be a DNS label (lowercase letters, digits, dashes)."
  }
}

variable "node_image" {
  description = <<-EOT
    Kind node image, pinned by digest: the default image of the kind release that the kind provider
    embeds (kind v0.30.0 -> Kubernetes 1.34.0, from that release's notes). Knative Serving 1.21
    needs Kubernetes >= 1.33 (its components exit on start otherwise). See compatibility.yaml.
  EOT
  type        = string
  default     = "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"

  validation {
    condition     = can(regex("^kindest/node:v1\\.(3[3-9]|[4-9][0-9])\\.", var.node_image))
    error_message = "node_image must be a kindest/node image for Kubernetes v1.33 or newer (Knative Serving 1.21 refuses older clusters)."
  }
}

variable "kubeconfig_path" {
  description = "Where the kind provider writes the cluster's kubeconfig (kept outside the repository)."
  type        = string
  default     = "~/.kube/sluice-kind.yaml"
}

# ---- component versions ----------------------------------------------------------------------
variable "cert_manager_version" {
  description = "cert-manager Helm chart version (https://charts.jetstack.io)."
  type        = string
  default     = "v1.17.0"
}

variable "knative_operator_version" {
  description = "Knative Operator Helm chart version (https://knative.github.io/operator)."
  type        = string
  default     = "v1.21.1"
}

variable "knative_serving_version" {
  description = "Knative Serving version the operator installs (KnativeServing spec.version). 1.21 needs Kubernetes >= 1.33."
  type        = string
  default     = "1.21"
}

variable "kserve_version" {
  description = "KServe chart version for kserve-crd, kserve-resources and kserve-runtime-configs (oci://ghcr.io/kserve/charts)."
  type        = string
  default     = "v0.20.0"

  validation {
    condition     = can(regex("^v0\\.(2[0-9]|[3-9][0-9])\\.", var.kserve_version))
    error_message = "kserve_version must be v0.20.0 or newer (Knative deployment mode naming)."
  }
}

variable "kserve_install_stock_runtimes" {
  description = "Also install KServe's stock ClusterServingRuntimes (sluice uses its own runtime from gitops/)."
  type        = bool
  default     = true
}

variable "prometheus_chart_version" {
  description = "prometheus Helm chart version (https://prometheus-community.github.io/helm-charts): the Prometheus the rollout reads."
  type        = string
  default     = "29.27.0"
}

variable "prometheus_scrape_interval" {
  description = "How often the in-cluster Prometheus scrapes the predictor pods (the rollout reads counters, so shorter means fresher gates)."
  type        = string
  default     = "15s"
}

variable "argocd_chart_version" {
  description = "argo-cd Helm chart version (https://argoproj.github.io/argo-helm)."
  type        = string
  default     = "8.6.4"
}

variable "argocd_reconciliation_timeout" {
  description = "How often ArgoCD polls Git without a webhook (argocd-cm timeout.reconciliation)."
  type        = string
  default     = "30s"
}

# ---- GitOps ----------------------------------------------------------------------------------
variable "git_repo_url" {
  description = <<-EOT
    Git URL ArgoCD syncs gitops/ from. Overrides spec.source.repoURL of the Application(s) in
    argocd_bootstrap_manifests. For the local e2e it is a git daemon on the host, e.g.
    git://172.18.0.1:9418/sluice.git. Empty keeps the URL written in the file.
  EOT
  type        = string
  default     = ""
}

variable "git_revision" {
  description = "Branch, tag or commit ArgoCD follows (spec.source.targetRevision)."
  type        = string
  default     = "main"
}

variable "argocd_cm_patch_path" {
  description = "argocd-cm patch whose data is merged into the chart's configs.cm, relative to this module."
  type        = string
  default     = "../../argocd/argocd-cm-patch.yaml"
}

variable "argocd_health_lua_path" {
  description = "Lua health check for serving.kserve.io/InferenceService, relative to this module."
  type        = string
  default     = "../../argocd/health/inferenceservice.lua"
}

# ---- model storage (LocalStack S3 on the host) ------------------------------------------------
variable "s3_endpoint" {
  description = <<-EOT
    host:port of LocalStack as seen from inside the cluster (no scheme), written into the
    serving.kserve.io/s3-endpoint annotation. On Linux use the kind Docker network gateway
    (`docker network inspect kind`), e.g. 172.18.0.1:4566, with LocalStack listening on 0.0.0.0;
    on Docker Desktop host.docker.internal:4566.
  EOT
  type        = string
  default     = "host.docker.internal:4566"

  validation {
    condition     = can(regex("^[A-Za-z0-9.-]+:[0-9]+$", var.s3_endpoint))
    error_message = "s3_endpoint must be host:port without a scheme, e.g. 172.18.0.1:4566."
  }
}

variable "s3_region" {
  description = "Region annotation for the S3 Secret."
  type        = string
  default     = "us-east-1"
}

variable "s3_use_https" {
  description = "Whether the storage initializer uses HTTPS for S3 (LocalStack: false)."
  type        = bool
  default     = false
}

variable "aws_access_key_id" {
  description = "S3 access key for the model bucket (LocalStack accepts any; never commit real keys)."
  type        = string
  default     = "test"
  sensitive   = true
}

variable "aws_secret_access_key" {
  description = "S3 secret key for the model bucket."
  type        = string
  default     = "test"
  sensitive   = true
}

variable "serving_namespace" {
  description = "Namespace of the InferenceServices; must match the Namespace in gitops/."
  type        = string
  default     = "sluice-serving"
}

variable "s3_secret_name" {
  description = "Secret holding S3 credentials; must match the ServiceAccount's secrets[] in gitops/."
  type        = string
  default     = "sluice-s3"
}

variable "argocd_bootstrap_manifests" {
  description = <<-EOT
    Manifests applied once ArgoCD runs, relative to this module, in order: the AppProject, then
    the root Application (app of apps over argocd/apps/). Applications get repoURL/targetRevision
    overridden by git_repo_url/git_revision; AppProjects get git_repo_url added to sourceRepos.
  EOT
  type        = list(string)
  default     = ["../../argocd/bootstrap/project.yaml", "../../argocd/bootstrap/root-application.yaml"]
}

variable "knative_skip_tag_resolution" {
  description = <<-EOT
    Registries whose image tags Knative does not resolve to digests. Images loaded with
    `kind load` (such as ghcr.io/sluice-dev/sluice-runtime from gitops/platform) exist in no
    registry, so resolving them would fail the revision.
  EOT
  type        = list(string)
  default     = ["kind.local", "ko.local", "dev.local", "docker.io", "index.docker.io", "ghcr.io"]
}

variable "ingress_domain" {
  description = "Knative route domain; InferenceService hosts become <name>-predictor.<namespace>.<domain>."
  type        = string
  default     = "example.com"
}
