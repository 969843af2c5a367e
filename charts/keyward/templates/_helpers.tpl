{{/*
Names, labels and the checks every template relies on.
*/}}

{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already holds the chart's. */}}
{{- define "keyward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "keyward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keyward.labels" -}}
helm.sh/chart: {{ include "keyward.chart" . }}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "keyward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keyward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keyward.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "keyward.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{- define "keyward.leaseName" -}}
{{- default (include "keyward.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* A duration such as 15s, 2m or 1h in seconds (the schema admits only that form). */}}
{{- define "keyward.seconds" -}}
{{- $number := regexFind "^[0-9]+" . | int }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- if eq $unit "h" }}{{ mul $number 3600 }}
{{- else if eq $unit "m" }}{{ mul $number 60 }}
{{- else }}{{ $number }}
{{- end }}
{{- end }}

{{/*
Combinations of values the schema cannot refuse with a clear message. Included by the
Deployment, so every install and `helm template` runs them.
*/}}
{{- define "keyward.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: replicas without leader election would all reconcile at once" }}
{{- end }}
{{- if and .Values.rbac.namespaced (empty .Values.watchNamespaces) }}
{{- fail "rbac.namespaced needs watchNamespaces: name the namespaces to grant the operator a Role in (an empty list watches all namespaces, which needs a ClusterRole)" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ: each endpoint needs a port of its own" }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- $lease := include "keyward.seconds" .Values.leaderElection.leaseDuration | int }}
{{- $renew := include "keyward.seconds" .Values.leaderElection.renewDeadline | int }}
{{- if ge $renew $lease }}
{{- fail (printf "leaderElection.renewDeadline (%s) must be shorter than leaderElection.leaseDuration (%s): a leader must give up before a standby may take over" .Values.leaderElection.renewDeadline .Values.leaderElection.leaseDuration) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs wherever it watches: exactly the API calls keyward makes
(see the chart README's "Permissions").
*/}}
{{- define "keyward.rules" -}}
# Keyrings, distribution, verifier and delivery Secrets: watched, written with
# create/update, keyring owner references dropped with a patch, delivery Secrets and
# the external Job's key-versions Secret deleted. get/list/update are also what the
# re-encryption Jobs' Role grants, which Kubernetes only lets a holder grant.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, patch, delete]
# The re-encryption progress ConfigMap; patch only so the Jobs' Role may grant it.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update, patch]
# The re-encryption Jobs' identity: a ServiceAccount, Role and RoleBinding per key; the
# RoleBinding exists only while a Job runs, so it is deleted when the step ends.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, update]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [get, create, update]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, create, update, delete]
# Counting the pods of target workloads that hold a key; reading its own Pod's image.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
# Events on OAuthClients and EncryptionKeys; repeats are patched into a series.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The re-encryption Jobs.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# Target workloads: watched, and the key projected into their pod template with a
# server-side apply patch.
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch, patch]
- apiGroups: [keyward.io]
  resources: [encryptionkeys, oauthclients]
  verbs: [get, list, watch]
- apiGroups: [keyward.io]
  resources: [encryptionkeys/status, oauthclients/status]
  verbs: [patch]
{{- end }}

{{/* The operator's ServiceAccount, as a binding's subject. */}}
{{- define "keyward.subject" -}}
- kind: ServiceAccount
  name: {{ include "keyward.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* An alert's `for` and labels: its severity, then `prometheusRule.alertLabels`.
Called with (list .Values.prometheusRule "alertKey"). */}}
{{- define "keyward.alertSettings" -}}
{{- $rule := index . 0 }}
{{- $key := index . 1 -}}
for: {{ index $rule.for $key }}
labels:
  severity: {{ index $rule.severity $key | quote }}
  {{- with $rule.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
