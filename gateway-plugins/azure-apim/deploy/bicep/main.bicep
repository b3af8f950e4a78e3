// Astrocyte memory for Azure API Management: the service, the named values the fragments read,
// the two policy fragments and (optionally) a chat completions API that includes them.
// Deploy into a resource group: see ../../README.md ("Deploy with Bicep").

@description('Azure region; the resource group\'s by default.')
param location string = resourceGroup().location

@description('API Management service name (globally unique; becomes <name>.azure-api.net).')
param apimName string

@description('Publisher e-mail required by API Management.')
param publisherEmail string

@description('Publisher name required by API Management.')
param publisherName string

@description('API Management tier. Consumption is ready in minutes; Developer/Basic/Standard take longer.')
@allowed([
  'Consumption'
  'Developer'
  'BasicV2'
  'StandardV2'
  'Standard'
  'Premium'
])
param skuName string = 'Consumption'

@description('HTTPS base URL of the Astrocyte gateway, without a trailing slash.')
param astrocyteUrl string

@description('Astrocyte API key of a trusted_service entry. Leave empty when astrocyteApiKeySecretId is set.')
@secure()
param astrocyteApiKey string = ''

@description('Key Vault secret URI holding the Astrocyte API key (instead of astrocyteApiKey).')
param astrocyteApiKeySecretId string = ''

@description('User-assigned identity (in this resource group) allowed to read that secret.')
param keyVaultIdentityName string = ''

@description('Bank template over {subscription}, {product} and {claim}.')
param bankTemplate string = 'user:{subscription}'

@description('Principal template naming the end user to Astrocyte, over the same placeholders.')
param principalTemplate string = 'user:{subscription}'

@description('Comma-separated banks a client may pick with X-Memory-Bank; a single comma allows none.')
param bankAllowlist string = ','

@description('JWT claim used for {claim} (the token validate-jwt stored in the astrocyte-jwt variable).')
param jwtClaim string = 'sub'

@description('Most memories asked of Astrocyte per chat call.')
param maxResults string = '5'

@description('Least score a memory needs to be inserted.')
param minScore string = '0'

@description('Most characters of memory inserted into one chat call.')
param maxChars string = '2000'

@description('Seconds the recall call may take before the chat call goes on without memory.')
param timeoutSeconds string = '2'

@description('Seconds the one-way retain call may take.')
param retainTimeoutSeconds string = '10'

@description('Base URL of the OpenAI-compatible model API; <base>/chat/completions is the chat endpoint.')
param modelBaseUrl string

@description('Header that carries the model key: api-key (Azure OpenAI) or Authorization (then the key is "Bearer ...").')
param modelApiKeyHeader string = 'api-key'

@description('Value of that header.')
@secure()
param modelApiKey string

@description('Seconds the model call may take.')
param modelTimeoutSeconds string = '120'

@description('Create the memory-enabled chat API, its policy and a demo subscription.')
param createChatApi bool = true

@description('Path of the chat API under the gateway URL.')
param chatApiPath string = 'memory-chat'

var useKeyVault = !empty(astrocyteApiKeySecretId)

var settings = [
  {
    name: 'astrocyte-url'
    value: astrocyteUrl
  }
  {
    name: 'astrocyte-bank-template'
    value: bankTemplate
  }
  {
    name: 'astrocyte-principal-template'
    value: principalTemplate
  }
  {
    name: 'astrocyte-bank-allowlist'
    value: bankAllowlist
  }
  {
    name: 'astrocyte-jwt-claim'
    value: jwtClaim
  }
  {
    name: 'astrocyte-max-results'
    value: maxResults
  }
  {
    name: 'astrocyte-min-score'
    value: minScore
  }
  {
    name: 'astrocyte-max-chars'
    value: maxChars
  }
  {
    name: 'astrocyte-timeout-seconds'
    value: timeoutSeconds
  }
  {
    name: 'astrocyte-retain-timeout-seconds'
    value: retainTimeoutSeconds
  }
  {
    name: 'model-base-url'
    value: modelBaseUrl
  }
  {
    name: 'model-api-key-header'
    value: modelApiKeyHeader
  }
  {
    name: 'model-timeout-seconds'
    value: modelTimeoutSeconds
  }
]

resource keyVaultIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = if (useKeyVault) {
  name: keyVaultIdentityName
}

resource apim 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  name: apimName
  location: location
  sku: {
    name: skuName
    capacity: skuName == 'Consumption' ? 0 : 1
  }
  identity: useKeyVault ? {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${keyVaultIdentity.id}': {}
    }
  } : {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
  }
}

resource setting 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for item in settings: {
  parent: apim
  name: item.name
  properties: {
    displayName: item.name
    value: item.value
    secret: false
  }
}]

resource astrocyteKey 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = {
  parent: apim
  name: 'astrocyte-api-key'
  properties: useKeyVault ? {
    displayName: 'astrocyte-api-key'
    secret: true
    keyVault: {
      secretIdentifier: astrocyteApiKeySecretId
      identityClientId: keyVaultIdentity.properties.clientId
    }
  } : {
    displayName: 'astrocyte-api-key'
    secret: true
    value: astrocyteApiKey
  }
}

resource modelKey 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = {
  parent: apim
  name: 'model-api-key'
  properties: {
    displayName: 'model-api-key'
    secret: true
    value: modelApiKey
  }
}

// A fragment is checked against the named values it names, so they come first. Two resources, not a
// loop: loadTextContent takes only a literal path.
resource recallFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: apim
  name: 'astrocyte-recall'
  dependsOn: [
    setting
    astrocyteKey
  ]
  properties: {
    description: 'Astrocyte recall: inserts remembered facts into a chat completions request (inbound).'
    format: 'rawxml'
    value: loadTextContent('../../policy-fragments/astrocyte-recall.xml')
  }
}

resource retainFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: apim
  name: 'astrocyte-retain'
  dependsOn: [
    setting
    astrocyteKey
  ]
  properties: {
    description: 'Astrocyte retain: remembers both turns of a non-streamed chat completion (outbound).'
    format: 'rawxml'
    value: loadTextContent('../../policy-fragments/astrocyte-retain.xml')
  }
}

resource chatApi 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = if (createChatApi) {
  parent: apim
  name: 'astrocyte-chat'
  properties: {
    displayName: 'Memory-enabled chat'
    path: chatApiPath
    protocols: [
      'https'
    ]
    serviceUrl: modelBaseUrl
    subscriptionRequired: true
  }
}

resource chatOperation 'Microsoft.ApiManagement/service/apis/operations@2023-05-01-preview' = if (createChatApi) {
  parent: chatApi
  name: 'chat-completions'
  properties: {
    displayName: 'Create chat completion'
    method: 'POST'
    urlTemplate: '/chat/completions'
  }
}

resource chatPolicy 'Microsoft.ApiManagement/service/apis/policies@2023-05-01-preview' = if (createChatApi) {
  parent: chatApi
  name: 'policy'
  dependsOn: [
    recallFragment
    retainFragment
    modelKey
  ]
  properties: {
    format: 'rawxml'
    value: loadTextContent('../../api-policy/chat-completions.xml')
  }
}

resource demoSubscription 'Microsoft.ApiManagement/service/subscriptions@2023-05-01-preview' = if (createChatApi) {
  parent: apim
  name: 'astrocyte-demo'
  properties: {
    displayName: 'Astrocyte demo'
    scope: '/apis/${chatApi.name}'
    state: 'active'
  }
}

output gatewayUrl string = apim.properties.gatewayUrl
output chatBaseUrl string = '${apim.properties.gatewayUrl}/${chatApiPath}'
output subscriptionName string = createChatApi ? demoSubscription.name : ''
