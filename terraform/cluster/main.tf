# Sluice local platform: a Kind cluster with cert-manager, Knative Serving (Kourier), KServe in
# Knative mode, ArgoCD, the S3 credentials Secret for LocalStack, and the ArgoCD root Application
# that syncs gitops/. Everything after the cluster is a Helm release, so one `terraform apply`
# builds it from nothing. What each resource does: docs/cluster.md.

locals {
  kubeconfig_path = pathexpand(var.kubeconfig_path)
  kubectl         = "kubectl --kubeconfig '${local.kubeconfig_path}'"
  manifests_chart = "${path.module}/charts/manifests"

  # The prometheus chart's default scrape jobs that the rollout does not need (it keeps
  # `prometheus` itself and `kubernetes-pods`).
  prometheus_jobs_off = [
    "kubernetes-api-servers", "kubernetes-nodes", "kubernetes-nodes-cadvisor", "kubernetes-service-endpoints",
    "kubernetes-service-endpoints-slow", "prometheus-pushgateway", "kubernetes-services", "kubernetes-pods-slow",
  ]

  # Knative Serving, installed by the Knative Operator from this custom resource.
  knative_serving = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeServing"
    metadata   = { name = "knative-serving", namespace = "knative-serving" }
    spec = {
      version = var.knative_serving_version
      ingress = {
        # Kind has no load balancer: a NodePort Service never waits for an external IP.
        kourier = { enabled = true, "service-type" = "NodePort" }
      }
      config = {
        network = { "ingress-class" = "kourier.ingress.networking.knative.dev" }
        domain  = { (var.ingress_domain) = "" }
        deployment = {
          # Images loaded with `kind load` exist in no registry: do not resolve their tags to digests.
          "registries-skipping-tag-resolving" = join(",", var.knative_skip_tag_resolution)
        }
      }
    }
  }

  # S3 credentials for KServe's storage initializer (the values never live in Git). The
  # ServiceAccount in gitops/ lists this Secret; the predictor names that ServiceAccount.
  s3_secret = {
    apiVersion = "v1"
    kind       = "Secret"
    type       = "Opaque"
    metadata = {
      name      = var.s3_secret_name
      namespace = var.serving_namespace
      labels    = { "app.kubernetes.io/part-of" = "sluice", "app.kubernetes.io/managed-by" = "terraform" }
      annotations = {
        "serving.kserve.io/s3-endpoint"  = var.s3_endpoint
        "serving.kserve.io/s3-usehttps"  = var.s3_use_https ? "1" : "0"
        "serving.kserve.io/s3-verifyssl" = var.s3_use_https ? "1" : "0"
        "serving.kserve.io/s3-region"    = var.s3_region
      }
    }
    stringData = {
      AWS_ACCESS_KEY_ID     = var.aws_access_key_id
      AWS_SECRET_ACCESS_KEY = var.aws_secret_access_key
    }
  }

  # argocd-cm: the patch written in argocd/ (if present), then the InferenceService health check
  # read from its Lua file so the tested Lua is exactly what runs.
  argocd_cm_patch_data = try(yamldecode(file("${path.module}/${var.argocd_cm_patch_path}")).data, {})
  argocd_cm = merge(local.argocd_cm_patch_data, {
    "timeout.reconciliation"                                            = var.argocd_reconciliation_timeout
    "resource.customizations.health.serving.kserve.io_InferenceService" = file("${path.module}/${var.argocd_health_lua_path}")
  })

  # Bootstrap manifests, split into documents (comment-only documents dropped), with the Git URL
  # overridden so the same files serve GitHub and the local e2e git daemon.
  bootstrap_raw  = join("\n---\n", [for p in var.argocd_bootstrap_manifests : file("${path.module}/${p}")])
  bootstrap_docs = [for d in split("\n---", local.bootstrap_raw) : yamldecode(d) if length(regexall("(?m)^[^#\\s-]", d)) > 0]
  override_repo  = var.git_repo_url != ""
  bootstrap_manifests = [
    for d in local.bootstrap_docs : (
      local.override_repo && try(d.kind, "") == "Application" && try(d.spec.source.repoURL, null) != null
      ? yamlencode(merge(d, { spec = merge(d.spec, { source = merge(d.spec.source, { repoURL = var.git_repo_url, targetRevision = var.git_revision }) }) }))
      : local.override_repo && try(d.kind, "") == "AppProject" && try(d.spec.sourceRepos, null) != null
      ? yamlencode(merge(d, { spec = merge(d.spec, { sourceRepos = distinct(concat(d.spec.sourceRepos, [var.git_repo_url])) }) }))
      : yamlencode(d)
    )
  ]
}

# ---- the cluster -----------------------------------------------------------------------------
resource "kind_cluster" "this" {
  name            = var.cluster_name
  node_image      = var.node_image
  wait_for_ready  = true
  kubeconfig_path = local.kubeconfig_path

  kind_config {
    kind        = "Cluster"
    api_version = "kind.x-k8s.io/v1alpha4"

    node {
      role   = "control-plane"
      labels = { "sluice.dev/role" = "serving" }
    }
  }
}

# ---- cert-manager: certificates for the KServe (and Knative) admission webhooks ---------------
resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_version
  namespace        = "cert-manager"
  create_namespace = true
  timeout          = 600

  set = [
    { name = "crds.enabled", value = "true" },
  ]

  depends_on = [kind_cluster.this]
}

# ---- Knative Serving + Kourier, through the Knative Operator ----------------------------------
resource "helm_release" "knative_operator" {
  name             = "knative-operator"
  repository       = "https://knative.github.io/operator"
  chart            = "knative-operator"
  version          = var.knative_operator_version
  namespace        = "knative-operator"
  create_namespace = true
  timeout          = 600

  depends_on = [kind_cluster.this]
}

resource "helm_release" "knative_serving" {
  name             = "knative-serving"
  chart            = local.manifests_chart
  namespace        = "knative-serving"
  create_namespace = true

  values = [yamlencode({ manifests = [yamlencode(local.knative_serving)] })]

  depends_on = [helm_release.knative_operator]
}

# KServe's controller checks at start-up whether Knative's Service CRD exists; install it only
# once Knative Serving is Ready. (Helm cannot wait on a custom resource's conditions.)
resource "terraform_data" "knative_ready" {
  triggers_replace = [helm_release.knative_serving.id, var.knative_serving_version]

  provisioner "local-exec" {
    command = <<-EOT
      set -e
      ${local.kubectl} -n knative-serving wait knativeserving/knative-serving --for=condition=Ready --timeout=900s
      ${local.kubectl} wait crd/services.serving.knative.dev --for=condition=Established --timeout=120s
    EOT
  }
}

# ---- KServe v0.20+ in Knative deployment mode -------------------------------------------------
resource "helm_release" "kserve_crd" {
  name             = "kserve-crd"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve-crd"
  version          = var.kserve_version
  namespace        = "kserve"
  create_namespace = true
  timeout          = 600

  depends_on = [kind_cluster.this]
}

resource "helm_release" "kserve_resources" {
  name       = "kserve-resources"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve-resources"
  version    = var.kserve_version
  namespace  = "kserve"
  timeout    = 900

  values = [yamlencode({
    kserve = {
      controller = {
        deploymentMode = "Knative"
        gateway = {
          domain = var.ingress_domain
          # Kourier, not Istio: no Istio VirtualService for the top-level host. Requests go to the
          # predictor's Knative route (<name>-predictor.<namespace>.<domain>).
          disableIstioVirtualHost = true
        }
      }
    }
  })]

  depends_on = [helm_release.cert_manager, helm_release.kserve_crd, terraform_data.knative_ready]
}

resource "helm_release" "kserve_runtime_configs" {
  name       = "kserve-runtime-configs"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve-runtime-configs"
  version    = var.kserve_version
  namespace  = "kserve"
  timeout    = 600

  set = [
    { name = "kserve.servingruntime.enabled", value = tostring(var.kserve_install_stock_runtimes) },
  ]

  # ClusterServingRuntimes pass KServe's validating webhook, so the controller must be up.
  depends_on = [helm_release.kserve_resources]
}

# ---- Prometheus: the metrics the canary gates read ---------------------------------------------
# The runtime's pods carry prometheus.io/scrape|port|path (ServingRuntime spec.annotations, copied to
# the predictor pods by KServe); the chart's kubernetes-pods job scrapes exactly those, keeping the
# series' own model/version labels (honor_labels). Everything else in the chart is off: the rollout
# needs the predictor series only. `sluice rollout` reads it through PROMETHEUS_URL (port-forward
# svc/prometheus-server in namespace monitoring).
resource "helm_release" "prometheus" {
  name             = "prometheus"
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "prometheus"
  version          = var.prometheus_chart_version
  namespace        = "monitoring"
  create_namespace = true
  timeout          = 600

  values = [yamlencode({
    alertmanager               = { enabled = false }
    "kube-state-metrics"       = { enabled = false }
    "prometheus-node-exporter" = { enabled = false }
    "prometheus-pushgateway"   = { enabled = false }
    server = {
      global           = { scrape_interval = var.prometheus_scrape_interval, evaluation_interval = var.prometheus_scrape_interval }
      persistentVolume = { enabled = false }
      retention        = "2d"
    }
    scrapeConfigs = { for job in local.prometheus_jobs_off : job => { enabled = false } }
  })]

  depends_on = [kind_cluster.this]
}

# ---- model storage credentials ---------------------------------------------------------------
resource "helm_release" "s3_credentials" {
  name             = "sluice-s3-credentials"
  chart            = local.manifests_chart
  namespace        = var.serving_namespace
  create_namespace = true

  values = [yamlencode({ manifests = [yamlencode(local.s3_secret)] })]

  depends_on = [kind_cluster.this]
}

# ---- ArgoCD, with the InferenceService health check --------------------------------------------
resource "helm_release" "argocd" {
  name             = "argocd"
  repository       = "https://argoproj.github.io/argo-helm"
  chart            = "argo-cd"
  version          = var.argocd_chart_version
  namespace        = "argocd"
  create_namespace = true
  timeout          = 900

  values = [yamlencode({
    dex           = { enabled = false }
    notifications = { enabled = false }
    configs = {
      cm     = local.argocd_cm
      params = { "server.insecure" = true }
    }
  })]

  depends_on = [kind_cluster.this]
}

# ---- GitOps bootstrap: the AppProject and the root Application (argocd/bootstrap/) ------------
resource "helm_release" "argocd_bootstrap" {
  name      = "sluice-bootstrap"
  chart     = local.manifests_chart
  namespace = "argocd"

  values = [yamlencode({ manifests = local.bootstrap_manifests })]

  # Sync only once everything the manifests in gitops/ depend on exists.
  depends_on = [
    helm_release.argocd,
    helm_release.kserve_resources,
    helm_release.kserve_runtime_configs,
    helm_release.s3_credentials,
  ]
}
