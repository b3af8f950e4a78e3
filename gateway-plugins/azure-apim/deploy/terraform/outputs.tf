output "gateway_url" {
  description = "The API Management gateway URL."
  value       = azurerm_api_management.apim.gateway_url
}

output "chat_base_url" {
  description = "OpenAI-compatible base URL of the memory-enabled chat API."
  value       = "${azurerm_api_management.apim.gateway_url}/${var.chat_api_path}"
}

output "subscription_key" {
  description = "Primary key of the demo subscription (read it with terraform output -raw subscription_key)."
  value       = var.create_chat_api ? azurerm_api_management_subscription.demo[0].primary_key : ""
  sensitive   = true
}
