variable "resource_group_name" {
  description = "Existing (possibly empty) resource group to deploy into."
  type        = string
}

variable "apim_name" {
  description = "API Management service name (globally unique; becomes <name>.azure-api.net)."
  type        = string
}

variable "publisher_email" {
  description = "Publisher e-mail required by API Management."
  type        = string
}

variable "publisher_name" {
  description = "Publisher name required by API Management."
  type        = string
}

variable "sku_name" {
  description = "API Management tier and capacity, e.g. Consumption_0 (ready in minutes) or Developer_1."
  type        = string
  default     = "Consumption_0"
}

variable "astrocyte_url" {
  description = "HTTPS base URL of the Astrocyte gateway, without a trailing slash."
  type        = string
  validation {
    condition     = startswith(var.astrocyte_url, "https://") && !endswith(var.astrocyte_url, "/")
    error_message = "astrocyte_url must start with https:// and not end with a slash."
  }
}

variable "astrocyte_api_key" {
  description = "Astrocyte API key of a trusted_service entry (set TF_VAR_astrocyte_api_key). Empty when key_vault_secret_id is set."
  type        = string
  default     = ""
  sensitive   = true
}

variable "key_vault_secret_id" {
  description = "Key Vault secret URI holding the Astrocyte API key (instead of astrocyte_api_key)."
  type        = string
  default     = ""
}

variable "key_vault_identity_name" {
  description = "User-assigned identity (in the resource group) allowed to read that secret."
  type        = string
  default     = ""
}

variable "bank_template" {
  description = "Bank template over {subscription}, {product} and {claim}."
  type        = string
  default     = "user:{subscription}"
}

variable "principal_template" {
  description = "Principal template naming the end user to Astrocyte, over the same placeholders."
  type        = string
  default     = "user:{subscription}"
}

variable "bank_allowlist" {
  description = "Comma-separated banks a client may pick with X-Memory-Bank; a single comma allows none."
  type        = string
  default     = ","
}

variable "jwt_claim" {
  description = "JWT claim used for {claim} (the token validate-jwt stored in the astrocyte-jwt variable)."
  type        = string
  default     = "sub"
}

variable "max_results" {
  description = "Most memories asked of Astrocyte per chat call."
  type        = string
  default     = "5"
}

variable "min_score" {
  description = "Least score a memory needs to be inserted."
  type        = string
  default     = "0"
}

variable "max_chars" {
  description = "Most characters of memory inserted into one chat call."
  type        = string
  default     = "2000"
}

variable "timeout_seconds" {
  description = "Seconds the recall call may take before the chat call goes on without memory."
  type        = string
  default     = "2"
}

variable "retain_timeout_seconds" {
  description = "Seconds the one-way retain call may take."
  type        = string
  default     = "10"
}

variable "model_base_url" {
  description = "Base URL of the OpenAI-compatible model API; <base>/chat/completions is the chat endpoint."
  type        = string
}

variable "model_api_key_header" {
  description = "Header that carries the model key: api-key (Azure OpenAI) or Authorization (then the key is \"Bearer ...\")."
  type        = string
  default     = "api-key"
}

variable "model_api_key" {
  description = "Value of that header (set TF_VAR_model_api_key)."
  type        = string
  sensitive   = true
}

variable "model_timeout_seconds" {
  description = "Seconds the model call may take."
  type        = string
  default     = "120"
}

variable "create_chat_api" {
  description = "Create the memory-enabled chat API, its policy and a demo subscription."
  type        = bool
  default     = true
}

variable "chat_api_path" {
  description = "Path of the chat API under the gateway URL."
  type        = string
  default     = "memory-chat"
}
