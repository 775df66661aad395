// The app's storage account: Functions host state (timer leases, keys), the deployment package,
// the token-lock leases and the load-step queue. Entra ID only: shared keys are off, so no
// connection string or SAS signed with an account key can exist.

@description('Name of the storage account.')
param name string
param location string
param tags object
@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string
@description('Blob container holding one lease blob per connection (LOCK_CONTAINER).')
param lockContainerName string
@description('Queue of load steps (LOAD_QUEUE); the host creates <name>-poison itself.')
param loadQueueName string
@allowed([
  'Enabled'
  'Disabled'
])
@description('Disabled unless allowedClientIps lists addresses (main.bicep decides); the app always goes through the private endpoint.')
param publicNetworkAccess string
@description('Public IPv4 addresses allowed through the firewall; empty disables public network access.')
param allowedClientIps array
@description('Log Analytics workspace receiving the queue write logs (the poison-queue alert reads them).')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // checkov:skip=CKV_AZURE_206:Locally redundant on purpose: the account holds leases, queued load steps and the app package, all re-creatable; tokens live in Key Vault, data in SQL.
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for ip in allowedClientIps: {
        value: ip
        action: 'Allow'
      }]
      virtualNetworkRules: []
    }
    sasPolicy: {
      sasExpirationPeriod: '0.01:00:00'
      expirationAction: 'Log'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource lockContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: lockContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource loadQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: loadQueueName
}

// Writes only (PutMessage, UpdateMessage): every move of a message into the poison queue is a
// PutMessage. Reads are left out: the host polls the queue every few seconds.
resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'queue-writes'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
