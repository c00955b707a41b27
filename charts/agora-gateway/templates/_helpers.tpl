{{/* Names and labels. */}}

{{- define "agora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agora.fullname" -}}
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

{{- define "agora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agora.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* Tells the admin Service (scraped by the ServiceMonitor) from the gateway's Service. */}}
{{- define "agora.adminServiceLabel" -}}
agora.dev/listener: admin
{{- end }}

{{- define "agora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agora.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: repository:tag, or repository@digest when a digest is set. */}}
{{- define "agora.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) }}
{{- end }}
{{- end }}

{{/* The workload kind: a StatefulSet gives each replica its own decision log volume. */}}
{{- define "agora.persistent" -}}
{{- if eq .Values.decisionLog.storage.type "persistentVolumeClaim" }}true{{ end }}
{{- end }}

{{/* Paths inside the gateway container. */}}
{{- define "agora.configPath" -}}/etc/agora/agora.yaml{{- end }}
{{- define "agora.decisionLogDir" -}}/var/lib/agora/decisions{{- end }}
{{- define "agora.bundleMountDir" -}}/opt/agora/bundle{{- end }}
{{- define "agora.bundleDir" -}}/var/lib/agora/bundles{{- end }}
{{- define "agora.authKeyDir" -}}/var/run/agora/auth{{- end }}
{{- define "agora.transparencyKeyDir" -}}/var/run/agora/transparency{{- end }}

{{/* Environment variables that carry secrets (never values of the chart). */}}
{{- define "agora.upstreamKeyEnv" -}}
{{- printf "AGORA_UPSTREAM_%s_API_KEY" (. | upper | replace "-" "_" | replace "." "_") }}
{{- end }}
{{- define "agora.hmacSecretEnv" -}}AGORA_AUTH_HMAC_SECRET{{- end }}
{{- define "agora.callerHashKeyEnv" -}}AGORA_CALLER_HASH_KEY{{- end }}

{{/* The variable that holds the value of decisionLog.ship.headerSecrets[i]. */}}
{{- define "agora.shipHeaderEnv" -}}{{ printf "AGORA_LOG_SHIP_HEADER_%d" . }}{{- end }}

{{/* A YAML scalar: null for an empty string, else the value as JSON (valid YAML). */}}
{{- define "agora.orNull" -}}
{{- if or (kindIs "invalid" .) (eq (toString .) "") }}null{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* A secret reference is used when both its name and key are set. */}}
{{- define "agora.secretSet" -}}
{{- if and . .name .key }}true{{ end }}
{{- end }}

{{/* Checks that the schema cannot express clearly, with messages that name the value. */}}
{{- define "agora.validate" -}}
{{- $v := .Values }}
{{- if and (not $v.governance.enabled) (not $v.policy.pinnedDigest) }}
{{- fail "policy.pinnedDigest is required when governance.enabled is false: the gateway enforces only the bundle with that digest (agora policy digest <bundle>)" }}
{{- end }}
{{- if $v.governance.enabled }}
{{- if not (or $v.governance.rpcUrls (include "agora.secretSet" $v.governance.rpcUrlSecret)) }}
{{- fail "governance.enabled needs governance.rpcUrls or governance.rpcUrlSecret (the JSON-RPC endpoint of the chain)" }}
{{- end }}
{{- if not $v.governance.registry }}
{{- fail "governance.enabled needs governance.registry (the PolicyRegistry address)" }}
{{- end }}
{{- end }}
{{- if and (eq $v.policy.bundle.source "configMap") (not $v.policy.bundle.configMap.name) }}
{{- fail "policy.bundle.source configMap needs policy.bundle.configMap.name" }}
{{- end }}
{{- $sources := 0 }}
{{- if $v.auth.jwksUrl }}{{ $sources = add1 $sources }}{{ end }}
{{- if include "agora.secretSet" $v.auth.publicKeySecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if include "agora.secretSet" $v.auth.hmacSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if gt $sources 1 }}
{{- fail "set only one of auth.jwksUrl, auth.publicKeySecret, auth.hmacSecret" }}
{{- end }}
{{- if and $v.auth.required (eq $sources 0) }}
{{- fail "auth.required is true, so tokens must be verified: set one of auth.jwksUrl, auth.publicKeySecret, auth.hmacSecret (or auth.required=false to admit anonymous callers only)" }}
{{- end }}
{{- if and (gt $sources 0) (not (and $v.auth.issuer $v.auth.audience)) }}
{{- fail "auth.issuer and auth.audience are required with a key source: a token meant for another issuer or service must not pass" }}
{{- end }}
{{- if and $v.transparency.anchor.contract (not (and $v.transparency.anchor.rpcUrl (include "agora.secretSet" $v.transparency.anchor.keySecret) (include "agora.secretSet" $v.transparency.keySecret))) }}
{{- fail "transparency.anchor.contract needs transparency.anchor.rpcUrl, transparency.anchor.keySecret (the anchorer's key) and transparency.keySecret (only signed checkpoints are anchored)" }}
{{- end }}
{{- if and (include "agora.secretSet" $v.transparency.keySecret) (not $v.transparency.origin) }}
{{- fail "transparency.origin is required with transparency.keySecret: each replica signs its own log's checkpoints as <origin>/<pod name> (e.g. gateway.example.com/decisions)" }}
{{- end }}
{{- if and (eq $v.decisionLog.callerHash "keyed") (not (include "agora.secretSet" $v.decisionLog.callerHashKeySecret)) }}
{{- fail "decisionLog.callerHashKeySecret is required with decisionLog.callerHash keyed (the default): the HMAC key of the callers' hashes in the decision log (or decisionLog.callerHash=unkeyed)" }}
{{- end }}
{{- if and $v.decisionLog.ship.enabled (not $v.decisionLog.ship.url) }}
{{- fail "decisionLog.ship.enabled needs decisionLog.ship.url: where the decision log is sent" }}
{{- end }}
{{- $ports := dict }}
{{- range $name, $port := dict "gateway.port" $v.gateway.port "gateway.adminPort" $v.gateway.adminPort "gateway.bundlePort" $v.gateway.bundlePort "opa.port" $v.opa.port "opa.diagnosticPort" $v.opa.diagnosticPort }}
{{- $key := toString (int $port) }}
{{- if hasKey $ports $key }}
{{- fail (printf "%s and %s are both %s: the gateway's and OPA's listeners share the pod's network and need ports of their own" (get $ports $key) $name $key) }}
{{- end }}
{{- $_ := set $ports $key $name }}
{{- end }}
{{- $names := list }}
{{- range $v.upstreams }}
{{- if has .name $names }}
{{- fail (printf "upstreams: the name %q is used twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}

{{/*
The gateway's environment: secrets from existing Secrets (each named in the
configuration by its variable), then gateway.extraEnv. Empty when there is none.
*/}}
{{- define "agora.gatewayEnv" -}}
{{- $v := .Values }}
{{- range $v.upstreams }}
{{- if include "agora.secretSet" .apiKeySecret }}
- name: {{ include "agora.upstreamKeyEnv" .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .apiKeySecret.name }}
      key: {{ .apiKeySecret.key }}
{{- end }}
{{- end }}
{{- if include "agora.secretSet" $v.auth.hmacSecret }}
- name: {{ include "agora.hmacSecretEnv" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.hmacSecret.name }}
      key: {{ $v.auth.hmacSecret.key }}
{{- end }}
{{- if include "agora.secretSet" $v.decisionLog.callerHashKeySecret }}
- name: {{ include "agora.callerHashKeyEnv" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.decisionLog.callerHashKeySecret.name }}
      key: {{ $v.decisionLog.callerHashKeySecret.key }}
{{- end }}
{{- if $v.decisionLog.ship.enabled }}
{{- range $i, $h := $v.decisionLog.ship.headerSecrets }}
- name: {{ include "agora.shipHeaderEnv" $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $h.name }}
      key: {{ $h.key }}
{{- end }}
{{- end }}
{{- if and $v.governance.enabled (include "agora.secretSet" $v.governance.rpcUrlSecret) }}
# Appended to governance.rpc_urls: a configuration override by index.
- name: {{ printf "AGORA__GOVERNANCE__RPC_URLS__%d" (len $v.governance.rpcUrls) }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.governance.rpcUrlSecret.name }}
      key: {{ $v.governance.rpcUrlSecret.key }}
{{- end }}
{{- if include "agora.secretSet" $v.transparency.keySecret }}
- name: AGORA_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# Each replica keeps its own log, so its checkpoints name it: <origin>/<pod name>.
- name: AGORA__TRANSPARENCY__ORIGIN
  value: {{ printf "%s/$(AGORA_POD_NAME)" $v.transparency.origin | quote }}
{{- end }}
{{- if $v.transparency.anchor.contract }}
- name: AGORA_ANCHOR_PRIVATE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.transparency.anchor.keySecret.name }}
      key: {{ $v.transparency.anchor.keySecret.key }}
{{- end }}
{{- if include "agora.secretSet" $v.usage.redisUrl }}
- name: AGORA__USAGE__REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.usage.redisUrl.name }}
      key: {{ $v.usage.redisUrl.key }}
{{- end }}
{{- with $v.gateway.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
