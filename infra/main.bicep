// exactsync: everything `azd up` provisions, in one resource group.
//
// Shape (see docs/deploy.md): a Flex Consumption Function App running as a user-assigned
// identity, integrated into a virtual network; Storage, Key Vault and Azure SQL reachable from
// that network through private endpoints, and from the internet only for the addresses listed
// in `allowedClientIps` (the deployer's machine, for local runs against the cloud). No keys,
// no connection strings, no passwords: every data-plane call is made with Microsoft Entra ID.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; also seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(36)
@maxLength(36)
@description('Object id of the deployer (azd sets AZURE_PRINCIPAL_ID): Microsoft Entra admin of the SQL server and holder of the roles local runs need.')
param principalId string

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal principalId is: User for a person, ServicePrincipal for a pipeline.')
param principalType string = 'User'

@description('Display name of the SQL server Entra admin (the deployer), e.g. their user principal name.')
param principalName string = 'exactsync-deployer'

@description('Exact Online host of the country the administrations live in.')
param exactBaseUrl string = 'https://start.exactonline.nl'

@minLength(1)
@description('Client id of the app registered in the Exact App Center.')
param exactClientId string

@secure()
@minLength(1)
@description('Client secret of the Exact app. Stored in Key Vault only; never an output.')
param exactClientSecret string

@secure()
@minLength(1)
@description('Webhook secret of the Exact app (verifies HashCode on webhook calls). Stored in Key Vault only.')
param exactWebhookSecret string

@secure()
@description('Optional Teams/Slack-style URL told when a connection needs a new consent. It is a capability URL, so it lives in Key Vault.')
param notifyWebhookUrl string = ''

@description('NCRONTAB of the rotate_tokens timer (keeps token chains alive, reports health).')
param rotateSchedule string = '0 */5 * * * *'

@description('NCRONTAB of the schedule_syncs timer (plans incremental loads).')
param syncSchedule string = '0 0 * * * *'

@minValue(1)
@maxValue(480)
@description('Refresh an idle token chain when its refresh token is older than this many hours.')
param keepaliveAfterHours int = 72

@description('Comma-separated division codes to sync; empty: every division the consent allows.')
param syncDivisions string = ''

@description('Comma-separated entity names to sync; empty: the whole catalog.')
param syncEntities string = ''

@allowed([
  'hard'
  'soft'
])
@description('How rows deleted in Exact leave the warehouse: hard deletes them, soft sets DeletedAt.')
param deleteMode string = 'hard'

@minValue(0)
@maxValue(5000)
@description('API calls per division and day kept free for incremental syncs.')
param dailyCallReserve int = 500

@minValue(10)
@maxValue(1500)
@description('Seconds one load step runs pages before it hands over (stays well under the 30 minute function timeout).')
param stepTimeBudgetSeconds int = 300

@description('Name of the Azure SQL database (the warehouse).')
param sqlDatabaseName string = 'exactsync'

@minValue(15)
@maxValue(10080)
@description('Minutes without activity after which the serverless database pauses (compute billing stops).')
param sqlAutoPauseDelayMinutes int = 60

@allowed([
  1
  2
  4
  6
  8
])
@description('Maximum vCores of the serverless database.')
param sqlMaxVCores int = 2

@description('Comma-separated public IPv4 addresses (single addresses, no ranges) that may reach Storage, Key Vault and SQL over their public endpoints, e.g. the deployer for local runs against the cloud. Empty: public network access is disabled on all three.')
param allowedClientIps string = ''

@description('E-mail address the alert rules notify; empty: the alerts fire without notification.')
param alertEmail string = ''

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault (and its token secrets) stays recoverable. Purge protection forbids purging it sooner.')
param keyVaultSoftDeleteRetentionDays int = 90

@description('Key Vault name override. Purge protection keeps a deleted vault\'s name reserved for the retention period: set a new name to redeploy an environment before then.')
param keyVaultName string = ''

@minValue(1)
@maxValue(1000)
@description('Upper bound of Flex Consumption instances. Exact rate limits, not compute, bound a sync: a few instances are plenty.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance in MB.')
param instanceMemoryMB int = 2048

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var clientIps = filter(split(replace(allowedClientIps, ' ', ''), ','), ip => !empty(ip))
// Storage, Key Vault and SQL: public endpoints off unless addresses are listed.
var publicNetworkAccess = empty(clientIps) ? 'Disabled' : 'Enabled'
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var deploymentContainerName = 'app-package'
var lockContainerName = 'token-locks'
var loadQueueName = 'load-steps'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module network 'app/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    vnetName: '${abbrs.networkVirtualNetworks}${resourceToken}'
    nsgName: '${abbrs.networkNetworkSecurityGroups}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    lockContainerName: lockContainerName
    loadQueueName: loadQueueName
    publicNetworkAccess: publicNetworkAccess
    allowedClientIps: clientIps
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVault 'app/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionDays
    publicNetworkAccess: publicNetworkAccess
    allowedClientIps: clientIps
    exactClientSecret: exactClientSecret
    exactWebhookSecret: exactWebhookSecret
    notifyWebhookUrl: notifyWebhookUrl
    notifyWebhookConfigured: !empty(notifyWebhookUrl)
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module sql 'app/sql.bicep' = {
  name: 'sql'
  scope: rg
  params: {
    serverName: '${abbrs.sqlServers}${resourceToken}'
    databaseName: sqlDatabaseName
    location: location
    tags: tags
    adminPrincipalId: principalId
    adminPrincipalName: principalName
    adminPrincipalType: principalType == 'User' ? 'User' : 'Application'
    autoPauseDelayMinutes: sqlAutoPauseDelayMinutes
    maxVCores: sqlMaxVCores
    publicNetworkAccess: publicNetworkAccess
    allowedClientIps: clientIps
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

// One private endpoint per data-plane endpoint the app calls; DNS answers with private addresses
// inside the virtual network only.
module blobEndpoint 'app/private-endpoint.bicep' = {
  name: 'pep-blob'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}blob-${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: storage.outputs.id
    groupId: 'blob'
    privateDnsZoneId: network.outputs.blobDnsZoneId
  }
}

module queueEndpoint 'app/private-endpoint.bicep' = {
  name: 'pep-queue'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}queue-${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: storage.outputs.id
    groupId: 'queue'
    privateDnsZoneId: network.outputs.queueDnsZoneId
  }
}

module vaultEndpoint 'app/private-endpoint.bicep' = {
  name: 'pep-vault'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}vault-${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: keyVault.outputs.id
    groupId: 'vault'
    privateDnsZoneId: network.outputs.vaultDnsZoneId
  }
}

module sqlEndpoint 'app/private-endpoint.bicep' = {
  name: 'pep-sql'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}sql-${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    targetResourceId: sql.outputs.serverId
    groupId: 'sqlServer'
    privateDnsZoneId: network.outputs.sqlDnsZoneId
  }
}

module roles 'app/role-assignments.bicep' = {
  name: 'role-assignments'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module app 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    appSubnetId: network.outputs.appSubnetId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    lockContainerName: lockContainerName
    loadQueueName: loadQueueName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    keyVaultUri: keyVault.outputs.uri
    exactClientSecretUri: keyVault.outputs.exactClientSecretUri
    exactWebhookSecretUri: keyVault.outputs.exactWebhookSecretUri
    notifyWebhookUrlSecretUri: keyVault.outputs.notifyWebhookUrlSecretUri
    sqlServerFqdn: sql.outputs.serverFqdn
    sqlDatabaseName: sql.outputs.databaseName
    exactBaseUrl: exactBaseUrl
    exactClientId: exactClientId
    rotateSchedule: rotateSchedule
    syncSchedule: syncSchedule
    keepaliveAfterHours: keepaliveAfterHours
    syncDivisions: syncDivisions
    syncEntities: syncEntities
    deleteMode: deleteMode
    dailyCallReserve: dailyCallReserve
    stepTimeBudgetSeconds: stepTimeBudgetSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host reads storage and resolves Key Vault references at its first start: let the roles
  // and the private endpoints exist before the site does.
  dependsOn: [
    roles
    blobEndpoint
    queueEndpoint
    vaultEndpoint
    sqlEndpoint
  ]
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertNamePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}'
    location: location
    tags: tags
    alertEmail: alertEmail
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    poisonQueueName: '${loadQueueName}-poison'
  }
}

// azd writes these into .azure/<env>/.env; the postprovision hook and local runs read them.
// Nothing secret: the Exact secrets stay in Key Vault, and the App Insights connection string
// grants nothing while local authentication is off.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output SERVICE_APP_URI string = app.outputs.uri
output EXACT_REDIRECT_URI string = app.outputs.redirectUri
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output LOCK_CONTAINER string = lockContainerName
output LOAD_QUEUE string = loadQueueName
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output SQL_SERVER_NAME string = sql.outputs.serverName
output SQL_SERVER string = sql.outputs.serverFqdn
output SQL_DATABASE string = sql.outputs.databaseName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
