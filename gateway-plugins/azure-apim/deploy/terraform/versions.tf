terraform {
  required_version = ">= 1.5"
  required_providers {
    # azurerm has every resource this needs (named values, policy fragments, API policies),
    # so azapi is not required.
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0, < 5.0"
    }
  }
}

# The subscription comes from ARM_SUBSCRIPTION_ID (see the README), never from a file in this folder.
provider "azurerm" {
  features {}
}
