output "cluster_name" {
  description = "Kind cluster name (for `kind load docker-image --name`)."
  value       = kind_cluster.this.name
}

output "kube_context" {
  description = "kubectl context of the cluster."
  value       = "kind-${kind_cluster.this.name}"
}

output "kubeconfig_path" {
  description = "Kubeconfig written by the kind provider."
  value       = local.kubeconfig_path
}

output "ingress_domain" {
  description = "Knative route domain; send requests to Kourier with Host: <isvc>-predictor.<namespace>.<domain>."
  value       = var.ingress_domain
}

output "serving_namespace" {
  description = "Namespace holding the InferenceServices and the S3 Secret."
  value       = var.serving_namespace
}

output "s3_endpoint" {
  description = "LocalStack endpoint written into the S3 Secret's serving.kserve.io/s3-endpoint annotation."
  value       = var.s3_endpoint
}
