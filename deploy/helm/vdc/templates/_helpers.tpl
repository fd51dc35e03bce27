{{/* The chart's name, or nameOverride. */}}
{{- define "vdc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, or the release's name when it
already holds the chart's name, or both.
*/}}
{{- define "vdc.fullname" -}}
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

{{- define "vdc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vdc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vdc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vdc.labels" -}}
helm.sh/chart: {{ include "vdc.chart" . }}
{{ include "vdc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vdc
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vdc.serviceAccountName" -}}
{{- default (include "vdc.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "vdc.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) }}
{{- end }}

{{- define "vdc.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (toString .Values.runtime.image.tag) }}
{{- end }}

{{- define "vdc.webhookServiceName" -}}
{{- printf "%s-webhook" (include "vdc.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "vdc.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "vdc.fullname" . | trunc 51 | trimSuffix "-") }}
{{- end }}

{{- define "vdc.metricsServiceName" -}}
{{- printf "%s-metrics" (include "vdc.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The webhook's TLS material as JSON: {"ca": PEM, "crt": PEM, "key": PEM}.

Made once per render and remembered in the root context (which every template of the
chart shares), so the Secret, the webhook configuration's caBundle and the Deployment's
checksum all see the same certificate. An installed release's Secret is reused (when
Helm can read it: not under `helm template`), so an upgrade neither rotates the
certificate nor restarts the operator for it. Call with the root context.
*/}}
{{- define "vdc.webhookTLS" -}}
{{- if not (hasKey . "vdcWebhookTLS") }}
{{- $svc := include "vdc.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $tls := dict }}
{{- $existing := lookup "v1" "Secret" $ns (include "vdc.webhookSecretName" .) }}
{{- $data := dig "data" (dict) ($existing | default (dict)) }}
{{- if and (hasKey $data "ca.crt") (hasKey $data "tls.crt") (hasKey $data "tls.key") }}
{{- $tls = dict "ca" (index $data "ca.crt" | b64dec) "crt" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "vdc.fullname" .)) 3650 }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names 3650 $ca }}
{{- $tls = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key }}
{{- end }}
{{- $_ := set . "vdcWebhookTLS" $tls }}
{{- end }}
{{- get . "vdcWebhookTLS" | toJson }}
{{- end }}
