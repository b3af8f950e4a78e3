#!/usr/bin/env bash
# Deploy the Astrocyte APIM policies with Bicep, Terraform or the APIOps publisher.
#
#   deploy/deploy.sh bicep [more az deployment arguments, e.g. --parameters maxResults=8]
#   deploy/deploy.sh terraform [more terraform apply arguments, e.g. -auto-approve]
#   deploy/deploy.sh apiops
#
# Settings come from the environment (see the README, "Deploy"). The two secrets, ASTROCYTE_API_KEY and
# MODEL_API_KEY, are read from the environment or, when unset and a terminal is attached, asked for
# without echo. They never appear on a command line (where `ps` and shell history would show them):
# Bicep gets them in a parameters file, Terraform in TF_VAR_ variables, the APIOps publisher in its
# configuration file; the files live in a private temporary folder removed on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin="$(dirname "$here")"

fail() {
  echo "deploy.sh: $*" >&2
  exit 2
}

need() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || fail "$name is not set (see the README, section Deploy)"
  done
}

secret() {
  # secret NAME: keep $NAME from the environment, or ask for it on the terminal.
  local name="$1" value
  if [[ -n "${!name:-}" ]]; then
    export "${name?}"
    return
  fi
  [[ -t 0 ]] || fail "$name is not set and there is no terminal to ask on"
  read -rsp "$name: " value
  echo >&2
  [[ -n "$value" ]] || fail "$name is empty"
  printf -v "$name" '%s' "$value"
  export "${name?}"
}

tool="${1:-}"
[[ "$tool" =~ ^(bicep|terraform|apiops)$ ]] || fail "usage: deploy.sh bicep|terraform|apiops"
shift

need RESOURCE_GROUP APIM_NAME ASTROCYTE_URL MODEL_BASE_URL
[[ "$ASTROCYTE_URL" == https://* ]] || fail "ASTROCYTE_URL must start with https://"
export ASTROCYTE_URL="${ASTROCYTE_URL%/}" MODEL_BASE_URL="${MODEL_BASE_URL%/}"
export MODEL_API_KEY_HEADER="${MODEL_API_KEY_HEADER:-api-key}"
export ASTROCYTE_API_KEY_SECRET_ID="${ASTROCYTE_API_KEY_SECRET_ID:-}" KEY_VAULT_IDENTITY_NAME="${KEY_VAULT_IDENTITY_NAME:-}"
if [[ -n "$ASTROCYTE_API_KEY_SECRET_ID" ]]; then
  [[ "$tool" == apiops || -n "$KEY_VAULT_IDENTITY_NAME" ]] \
    || fail "ASTROCYTE_API_KEY_SECRET_ID needs KEY_VAULT_IDENTITY_NAME (the identity that may read it)"
else
  secret ASTROCYTE_API_KEY
fi
secret MODEL_API_KEY

umask 077
private="$(mktemp -d)"
trap 'rm -rf "$private"' EXIT

case "$tool" in
bicep)
  need PUBLISHER_EMAIL PUBLISHER_NAME
  # python3 ships with the Azure CLI; it reads the values from its environment, not its arguments.
  python3 - >"$private/parameters.json" <<'PY'
import json, os
env = os.environ
values = {
    "apimName": env["APIM_NAME"],
    "publisherEmail": env["PUBLISHER_EMAIL"],
    "publisherName": env["PUBLISHER_NAME"],
    "astrocyteUrl": env["ASTROCYTE_URL"],
    "modelBaseUrl": env["MODEL_BASE_URL"],
    "modelApiKeyHeader": env["MODEL_API_KEY_HEADER"],
    "modelApiKey": env["MODEL_API_KEY"],
}
if env.get("ASTROCYTE_API_KEY_SECRET_ID"):
    values["astrocyteApiKeySecretId"] = env["ASTROCYTE_API_KEY_SECRET_ID"]
    values["keyVaultIdentityName"] = env["KEY_VAULT_IDENTITY_NAME"]
else:
    values["astrocyteApiKey"] = env["ASTROCYTE_API_KEY"]
if env.get("APIM_SKU"):
    values["skuName"] = env["APIM_SKU"]
print(json.dumps({
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {name: {"value": value} for name, value in values.items()},
}))
PY
  az deployment group create \
    --resource-group "$RESOURCE_GROUP" \
    --name astrocyte-apim \
    --template-file "$here/bicep/main.bicep" \
    --parameters "@$private/parameters.json" \
    --query properties.outputs \
    --output json \
    "$@"
  ;;
terraform)
  need PUBLISHER_EMAIL PUBLISHER_NAME
  export TF_VAR_resource_group_name="$RESOURCE_GROUP" TF_VAR_apim_name="$APIM_NAME"
  export TF_VAR_publisher_email="$PUBLISHER_EMAIL" TF_VAR_publisher_name="$PUBLISHER_NAME"
  export TF_VAR_astrocyte_url="$ASTROCYTE_URL" TF_VAR_model_base_url="$MODEL_BASE_URL"
  export TF_VAR_model_api_key_header="$MODEL_API_KEY_HEADER" TF_VAR_model_api_key="$MODEL_API_KEY"
  export TF_VAR_key_vault_secret_id="$ASTROCYTE_API_KEY_SECRET_ID" TF_VAR_key_vault_identity_name="$KEY_VAULT_IDENTITY_NAME"
  export TF_VAR_astrocyte_api_key="${ASTROCYTE_API_KEY:-}"
  if [[ -n "${APIM_SKU:-}" ]]; then export TF_VAR_sku_name="$APIM_SKU"; fi
  terraform -chdir="$here/terraform" init -input=false
  terraform -chdir="$here/terraform" apply -input=false "$@"
  ;;
apiops)
  need APIOPS_PUBLISHER
  [[ -x "$APIOPS_PUBLISHER" ]] || fail "APIOPS_PUBLISHER ($APIOPS_PUBLISHER) is not an executable publisher"
  if [[ -z "${AZURE_SUBSCRIPTION_ID:-}" ]]; then
    AZURE_SUBSCRIPTION_ID="$(az account show --query id --output tsv)"
  fi
  # JSON strings are YAML strings, so json.dumps quotes every value safely.
  python3 - >"$private/configuration.yaml" <<'PY'
import json, os
env = os.environ
def named(name, properties):
    return [f"  - name: {name}", "    properties:", f"      displayName: {name}"] + [
        f"      {key}: {json.dumps(value)}" for key, value in properties.items()
    ]
if env.get("ASTROCYTE_API_KEY_SECRET_ID"):
    key = named("astrocyte-api-key", {}) + [
        "      keyVault:", f"        secretIdentifier: {json.dumps(env['ASTROCYTE_API_KEY_SECRET_ID'])}"
    ]
    if env.get("KEY_VAULT_IDENTITY_CLIENT_ID"):
        key.append(f"        identityClientId: {json.dumps(env['KEY_VAULT_IDENTITY_CLIENT_ID'])}")
else:
    key = named("astrocyte-api-key", {"value": env["ASTROCYTE_API_KEY"], "secret": True})
lines = [f"apimServiceName: {json.dumps(env['APIM_NAME'])}", "namedValues:"]
lines += named("astrocyte-url", {"value": env["ASTROCYTE_URL"]})
lines += named("model-base-url", {"value": env["MODEL_BASE_URL"]})
lines += named("model-api-key-header", {"value": env["MODEL_API_KEY_HEADER"]})
lines += key
lines += named("model-api-key", {"value": env["MODEL_API_KEY"], "secret": True})
print("\n".join(lines))
PY
  export AZURE_SUBSCRIPTION_ID
  export AZURE_RESOURCE_GROUP_NAME="$RESOURCE_GROUP"
  export API_MANAGEMENT_SERVICE_NAME="$APIM_NAME"
  export API_MANAGEMENT_SERVICE_OUTPUT_FOLDER_PATH="$plugin/apiops/artifacts"
  export CONFIGURATION_YAML_PATH="$private/configuration.yaml"
  "$APIOPS_PUBLISHER"
  ;;
esac
