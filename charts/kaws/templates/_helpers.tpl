{{/*
Every kind kaws can run: its API group, plural, scope and the extra access its controller needs,
from files/kinds.yaml, which `kaws kinds` derives from the kind registry (`make crds` writes it,
cargo test fails when it differs). Adding a kind is one line in the registry, then `make crds
deploy` copies its CRD and this data into the chart and deploy/ (make chart-test checks both).
  secrets: true  -> get/list/watch Secrets it references, create/patch the Secrets it writes
  reads: [...]   -> other kaws kinds it references (get/list/watch), enabled or not
  iam: <prefix>  -> its statements in deploy/iam/policy.json start with this Sid prefix
*/}}
{{- define "kaws.kinds" -}}
{{ .Files.Get "files/kinds.yaml" }}
{{- end }}

{{- define "kaws.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaws.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kaws.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaws.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kaws.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kaws.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kaws.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kaws.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or needed by more than one replica. */}}
{{- define "kaws.leaderElection" -}}
{{- or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}
{{- end }}

{{/* The enabled kinds, validated against kaws.kinds. */}}
{{- define "kaws.enabledKinds" -}}
{{- $known := include "kaws.kinds" . | fromYaml }}
{{- $out := dict }}
{{- range (default (keys $known | sortAlpha) .Values.kinds) }}
{{- if not (hasKey $known .) }}
{{- fail (printf "kinds: unknown kind %q (known: %s)" . (keys $known | sortAlpha | join ", ")) }}
{{- end }}
{{- $_ := set $out . (get $known .) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
RBAC rules for the namespaced resources kaws touches, built from the enabled kinds.
Used by the ClusterRole (all namespaces) or by a Role per watched namespace.
*/}}
{{- define "kaws.namespacedRules" -}}
{{- $kinds := include "kaws.enabledKinds" . | fromYaml }}
{{- $secrets := false }}
{{- range $name, $k := $kinds }}
{{- if $k.secrets }}{{ $secrets = true }}{{ end }}
# {{ $name }}: watched (the cache serves reads; `get` only for the create intent, which must
# not come from a lagging cache), finalizer and annotations patched, status written with
# server-side apply. make test checks these against the requests kaws makes.
- apiGroups: [{{ $k.group | quote }}]
  resources: [{{ $k.plural | quote }}]
  verbs: [get, list, watch, patch]
- apiGroups: [{{ $k.group | quote }}]
  resources: ["{{ $k.plural }}/status"]
  verbs: [patch]
{{- if $k.secrets }}
# The Secrets it writes carry an owner reference with blockOwnerDeletion, which needs this.
- apiGroups: [{{ $k.group | quote }}]
  resources: ["{{ $k.plural }}/finalizers"]
  verbs: [update]
{{- end }}
{{- range $k.reads }}
# {{ $name }} waits for the {{ .plural }} it references.
- apiGroups: [{{ .group | quote }}]
  resources: [{{ .plural | quote }}]
  verbs: [get, list, watch]
{{- end }}
{{- end }}
{{- if $secrets }}
# Referenced password Secrets are watched by metadata and read; connection Secrets are
# written with server-side apply (an apply that creates the Secret is authorised as create too).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
{{- end }}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
