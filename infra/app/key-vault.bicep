// Key Vault: the Exact app's static secrets (set here from azd parameters) and, at run time, the
// rotating token sets the app writes through the SDK. RBAC only (no access policies), soft
// delete and purge protection so a deleted token chain can be recovered.

@description('Name of the vault.')
param name string
param location string
param tags object
@minValue(7)
@maxValue(90)
@description('Days a deleted vault or secret stays recoverable.')
param softDeleteRetentionInDays int
@allowed([
  'Enabled'
  'Disabled'
])
@description('Disabled unless allowedClientIps lists addresses (main.bicep decides); the app always goes through the private endpoint.')
param publicNetworkAccess string
@description('Public IPv4 addresses allowed through the firewall; empty disables public network access.')
param allowedClientIps array
@secure()
@description('Client secret of the Exact app.')
param exactClientSecret string
@secure()
@description('Webhook secret of the Exact app.')
param exactWebhookSecret string
@secure()
@description('Optional notification URL; written only when notifyWebhookConfigured.')
param notifyWebhookUrl string
@description('Whether a notification URL was given (a plain flag, so no output depends on the secure value).')
param notifyWebhookConfigured bool
@description('Log Analytics workspace receiving the vault\'s audit events.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for ip in allowedClientIps: {
        value: ip
      }]
      virtualNetworkRules: []
    }
  }
}

// Static secrets, read by the platform through Key Vault references in app settings. The
// rotating token secrets are never referenced that way (a reference may serve a day-old version).
resource exactClientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'EXACT-CLIENT-SECRET'
  properties: {
    // checkov:skip=CKV_AZURE_41:The Exact app secret has no expiry of its own; an expiry date here would only switch the app off on that date.
    value: exactClientSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource exactWebhookSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'EXACT-WEBHOOK-SECRET'
  properties: {
    // checkov:skip=CKV_AZURE_41:The Exact webhook secret has no expiry of its own; an expiry date here would only stop webhook verification on that date.
    value: exactWebhookSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource notifyWebhookUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (notifyWebhookConfigured) {
  parent: vault
  name: 'NOTIFY-WEBHOOK-URL'
  properties: {
    // checkov:skip=CKV_AZURE_41:A notification URL has no expiry of its own; an expiry date here would only silence re-consent notices on that date.
    // checkov:skip=CKV_AZURE_114:checkov does not look inside a conditional resource; contentType is set below (text/uri-list) and tests/infra asserts it.
    value: notifyWebhookUrl
    contentType: 'text/uri-list'
    attributes: {
      enabled: true
    }
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
// Versionless secret URIs: a reference follows the latest version of a static secret.
output exactClientSecretUri string = exactClientSecretSecret.properties.secretUri
output exactWebhookSecretUri string = exactWebhookSecretSecret.properties.secretUri
output notifyWebhookUrlSecretUri string = notifyWebhookConfigured ? '${vault.properties.vaultUri}secrets/NOTIFY-WEBHOOK-URL' : ''
