{{/* Name prefix: the release name when it already says "waymark", else "<release>-waymark". */}}
{{- define "waymark.fullname" -}}
{{- if contains "waymark" .Release.Name -}}
{{ .Release.Name }}
{{- else -}}
{{ .Release.Name }}-waymark
{{- end -}}
{{- end -}}

{{- define "waymark.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default (printf "%s-controller" (include "waymark.fullname" .)) }}
{{- end -}}

{{- define "waymark.labels" -}}
app.kubernetes.io/name: waymark
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "waymark.selectorLabels" -}}
app.kubernetes.io/name: waymark
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/*
What the controller does with the API, and no more; config/rbac/role.yaml holds the same rules
(tests/controller_manifests.rs compares them). Secrets are not here: see waymark.secretRules.
*/}}
{{- define "waymark.controllerRules" -}}
# Watch Releases; write their status, and of the rest only metadata.finalizers (never spec:
# Argo CD owns it): `patch` adds and removes the finalizer waymark.dev/route, by a merge patch
# of that list alone with the resourceVersion as precondition.
- apiGroups: ["waymark.dev"]
  resources: ["releases"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["waymark.dev"]
  resources: ["releases/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion (so that a foreground deletion of
# the Release waits for them); where the OwnerReferencesPermissionEnforcement admission plugin
# runs (OpenShift, hardened clusters), setting it needs `update` on the owner's finalizers.
- apiGroups: ["waymark.dev"]
  resources: ["releases/finalizers"]
  verbs: ["update"]
# Child Deployments: watched; created, then server-side applied and scaled (patch); the
# canary removed. `get` only to see whose an existing object of a child's name is.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Child Services: watched; created, then server-side applied. `get` as for Deployments.
# Never deleted by Waymark, but adopting one (`waymark.dev/adopt`) sets its owner reference,
# which OwnerReferencesPermissionEnforcement allows only to who may delete the object.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# HTTPRoutes: watched (a hand edit of a route is seen at once); weights written by
# server-side apply under the field manager `waymark`.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["list", "watch", "patch"]
# GRPCRoutes: the same, for Releases naming spec.traffic.gatewayAPI.grpcRoute (watched only
# once one does).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["grpcroutes"]
  verbs: ["list", "watch", "patch"]
# The route's parent Gateways and their GatewayClasses, read by name for
# status.supportedFeatures, only while a Release asks for sessionPersistence.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways", "gatewayclasses"]
  verbs: ["get"]
# Events on Releases (a repeated event patches its series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
The Prometheus bearer token and CA named in spec.analysis.prometheus: read one by name, and only
in the namespaces where Releases live. config/rbac/secret_reader_role.yaml holds the same rule.
*/}}
{{- define "waymark.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}

{{/* The chart's labels and the keep policy, added to the CRD's generated metadata. */}}
{{- define "waymark.crdMetadata" -}}
labels:
  {{- include "waymark.labels" . | nindent 2 }}
{{- if .Values.crds.keep }}
annotations:
  helm.sh/resource-policy: keep
{{- end }}
{{- end -}}

{{/*
Extra labels from a value (`field` names it in errors) after the chart's own: one that redefines
a label of the chart would be a duplicate key, which Helm passes on and the API server reads as
whichever comes last; refused instead, naming the value to change.
*/}}
{{- define "waymark.extraLabels" -}}
{{- $chartLabels := include "waymark.labels" .root | fromYaml -}}
{{- range $key, $value := .labels -}}
{{- if hasKey $chartLabels $key -}}
{{- fail (printf "%s sets the label %q, which the chart sets itself (to %q): remove it from %s" $.field $key (get $chartLabels $key) $.field) -}}
{{- end -}}
{{- end -}}
{{- with .labels -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}
