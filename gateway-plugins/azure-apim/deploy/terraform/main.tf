# Astrocyte memory for Azure API Management: the service, the named values the fragments read,
# the two policy fragments and (optionally) a chat completions API that includes them.
# See ../../README.md ("Deploy with Terraform").

locals {
  use_key_vault = var.key_vault_secret_id != ""

  # Every tunable the fragments and the chat API policy read, as plain named values.
  settings = {
    "astrocyte-url"                    = var.astrocyte_url
    "astrocyte-bank-template"          = var.bank_template
    "astrocyte-principal-template"     = var.principal_template
    "astrocyte-bank-allowlist"         = var.bank_allowlist
    "astrocyte-jwt-claim"              = var.jwt_claim
    "astrocyte-max-results"            = var.max_results
    "astrocyte-min-score"              = var.min_score
    "astrocyte-max-chars"              = var.max_chars
    "astrocyte-timeout-seconds"        = var.timeout_seconds
    "astrocyte-retain-timeout-seconds" = var.retain_timeout_seconds
    "model-base-url"                   = var.model_base_url
    "model-api-key-header"             = var.model_api_key_header
    "model-timeout-seconds"            = var.model_timeout_seconds
  }

  # The two fragments, each loaded from policy-fragments/<name>.xml.
  fragments = {
    "astrocyte-recall" = "Astrocyte recall: inserts remembered facts into a chat completions request (inbound)."
    "astrocyte-retain" = "Astrocyte retain: remembers both turns of a non-streamed chat completion (outbound)."
  }
}

data "azurerm_resource_group" "target" {
  name = var.resource_group_name
}

data "azurerm_user_assigned_identity" "key_vault" {
  count               = local.use_key_vault ? 1 : 0
  name                = var.key_vault_identity_name
  resource_group_name = var.resource_group_name
}

resource "azurerm_api_management" "apim" {
  name                = var.apim_name
  location            = data.azurerm_resource_group.target.location
  resource_group_name = var.resource_group_name
  publisher_name      = var.publisher_name
  publisher_email     = var.publisher_email
  sku_name            = var.sku_name

  identity {
    type         = local.use_key_vault ? "UserAssigned" : "SystemAssigned"
    identity_ids = local.use_key_vault ? [data.azurerm_user_assigned_identity.key_vault[0].id] : null
  }
}

resource "azurerm_api_management_named_value" "setting" {
  for_each            = local.settings
  name                = each.key
  display_name        = each.key
  resource_group_name = var.resource_group_name
  api_management_name = azurerm_api_management.apim.name
  value               = each.value
}

resource "azurerm_api_management_named_value" "astrocyte_api_key" {
  name                = "astrocyte-api-key"
  display_name        = "astrocyte-api-key"
  resource_group_name = var.resource_group_name
  api_management_name = azurerm_api_management.apim.name
  secret              = true
  value               = local.use_key_vault ? null : var.astrocyte_api_key

  dynamic "value_from_key_vault" {
    for_each = local.use_key_vault ? [var.key_vault_secret_id] : []
    content {
      secret_id          = value_from_key_vault.value
      identity_client_id = data.azurerm_user_assigned_identity.key_vault[0].client_id
    }
  }

  lifecycle {
    precondition {
      condition     = local.use_key_vault || var.astrocyte_api_key != ""
      error_message = "Set TF_VAR_astrocyte_api_key, or key_vault_secret_id and key_vault_identity_name."
    }
  }
}

resource "azurerm_api_management_named_value" "model_api_key" {
  name                = "model-api-key"
  display_name        = "model-api-key"
  resource_group_name = var.resource_group_name
  api_management_name = azurerm_api_management.apim.name
  secret              = true
  value               = var.model_api_key
}

# A fragment is checked against the named values it names, so they come first.
resource "azurerm_api_management_policy_fragment" "astrocyte" {
  for_each          = local.fragments
  api_management_id = azurerm_api_management.apim.id
  name              = each.key
  description       = each.value
  format            = "rawxml"
  value             = file("${path.module}/../../policy-fragments/${each.key}.xml")
  depends_on        = [azurerm_api_management_named_value.setting, azurerm_api_management_named_value.astrocyte_api_key]
}

resource "azurerm_api_management_api" "chat" {
  count                 = var.create_chat_api ? 1 : 0
  name                  = "astrocyte-chat"
  resource_group_name   = var.resource_group_name
  api_management_name   = azurerm_api_management.apim.name
  revision              = "1"
  display_name          = "Memory-enabled chat"
  path                  = var.chat_api_path
  protocols             = ["https"]
  service_url           = var.model_base_url
  subscription_required = true
}

resource "azurerm_api_management_api_operation" "chat_completions" {
  count               = var.create_chat_api ? 1 : 0
  operation_id        = "chat-completions"
  api_name            = azurerm_api_management_api.chat[0].name
  api_management_name = azurerm_api_management.apim.name
  resource_group_name = var.resource_group_name
  display_name        = "Create chat completion"
  method              = "POST"
  url_template        = "/chat/completions"
}

resource "azurerm_api_management_api_policy" "chat" {
  count               = var.create_chat_api ? 1 : 0
  api_name            = azurerm_api_management_api.chat[0].name
  api_management_name = azurerm_api_management.apim.name
  resource_group_name = var.resource_group_name
  xml_content         = file("${path.module}/../../api-policy/chat-completions.xml")
  depends_on = [
    azurerm_api_management_policy_fragment.astrocyte,
    azurerm_api_management_named_value.model_api_key,
  ]
}

resource "azurerm_api_management_subscription" "demo" {
  count               = var.create_chat_api ? 1 : 0
  subscription_id     = "astrocyte-demo"
  display_name        = "Astrocyte demo"
  resource_group_name = var.resource_group_name
  api_management_name = azurerm_api_management.apim.name
  api_id              = replace(azurerm_api_management_api.chat[0].id, "/;rev=.*/", "")
  state               = "active"
}
