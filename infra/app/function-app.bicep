// The Function App on the Flex Consumption plan (FC1, Linux, Python 3.11), running as the
// user-assigned identity, with every app setting the code reads in Azure (shared/settings.py,
// SETTINGS rows with in_azure=True) and the few the Functions host itself needs.

@description('Name of the Function App (also its <name>.azurewebsites.net host).')
param name string
@description('Name of the Flex Consumption plan.')
param planName string
param location string
param tags object
@description('Resource id of the user-assigned identity the app runs as.')
param identityId string
@description('Client id of that identity.')
param identityClientId string
@description('Subnet (delegated to Microsoft.App/environments) for VNet integration.')
param appSubnetId string
@description('Storage account of the host, the package, the locks and the queue.')
param storageAccountName string
param deploymentContainerName string
param lockContainerName string
param loadQueueName string
@description('Application Insights connection string (not its name).')
param applicationInsightsConnectionString string
@description('Vault URI; tokens live there.')
param keyVaultUri string
@description('Versionless URI of the EXACT-CLIENT-SECRET secret.')
param exactClientSecretUri string
@description('Versionless URI of the EXACT-WEBHOOK-SECRET secret.')
param exactWebhookSecretUri string
@description('Versionless URI of the NOTIFY-WEBHOOK-URL secret; empty when none was given.')
param notifyWebhookUrlSecretUri string
param sqlServerFqdn string
param sqlDatabaseName string
param exactBaseUrl string
param exactClientId string
param rotateSchedule string
param syncSchedule string
param keepaliveAfterHours int
param syncDivisions string
param syncEntities string
param deleteMode string
param dailyCallReserve int
param stepTimeBudgetSeconds int
param maximumInstanceCount int
param instanceMemoryMB int

// The Exact App Center registration must list exactly this redirect URI.
var redirectUri = 'https://${name}.azurewebsites.net/api/oauth/callback'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Zone redundancy of a Flex Consumption plan is offered in some regions only; timers, queue retries and the token protocol tolerate losing an instance.
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'app'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222:The site must stay public: Exact posts webhooks and redirects browsers to the OAuth callback from the internet.
    // checkov:skip=CKV_AZURE_17:Callers (Exact's webhooks, browsers after consent, operators) present no client certificates; function keys, HMAC and signed state protect the routes.
    // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero per function; always-ready instances would bill around the clock for an hourly sync.
    // checkov:skip=CKV_AZURE_213:A health-check ping every minute would keep a scale-to-zero app awake and billed; the alerts watch the failures that matter.
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: appSubnetId
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        // Functions host: identity-based AzureWebJobsStorage (the queue trigger's connection too).
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // exactsync (shared/settings.py). Static secrets as Key Vault references; tokens via the SDK.
        {
          name: 'EXACT_BASE_URL'
          value: exactBaseUrl
        }
        {
          name: 'EXACT_CLIENT_ID'
          value: exactClientId
        }
        {
          name: 'EXACT_CLIENT_SECRET'
          value: '@Microsoft.KeyVault(SecretUri=${exactClientSecretUri})'
        }
        {
          name: 'EXACT_WEBHOOK_SECRET'
          value: '@Microsoft.KeyVault(SecretUri=${exactWebhookSecretUri})'
        }
        {
          name: 'EXACT_REDIRECT_URI'
          value: redirectUri
        }
        {
          name: 'NOTIFY_WEBHOOK_URL'
          value: empty(notifyWebhookUrlSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${notifyWebhookUrlSecretUri})'
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'SQL_SERVER'
          value: sqlServerFqdn
        }
        {
          name: 'SQL_DATABASE'
          value: sqlDatabaseName
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'LOCK_CONTAINER'
          value: lockContainerName
        }
        {
          name: 'LOAD_QUEUE'
          value: loadQueueName
        }
        {
          name: 'ROTATE_SCHEDULE'
          value: rotateSchedule
        }
        {
          name: 'SYNC_SCHEDULE'
          value: syncSchedule
        }
        {
          name: 'KEEPALIVE_AFTER_HOURS'
          value: string(keepaliveAfterHours)
        }
        {
          name: 'SYNC_DIVISIONS'
          value: syncDivisions
        }
        {
          name: 'SYNC_ENTITIES'
          value: syncEntities
        }
        {
          name: 'DELETE_MODE'
          value: deleteMode
        }
        {
          name: 'DAILY_CALL_RESERVE'
          value: string(dailyCallReserve)
        }
        {
          name: 'STEP_TIME_BUDGET_SECONDS'
          value: string(stepTimeBudgetSeconds)
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No publishing with user names and passwords: azd deploys with an Entra token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
output redirectUri string = redirectUri
