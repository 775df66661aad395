// Log Analytics + workspace-based Application Insights. Local (instrumentation-key) auth is off:
// telemetry is accepted only from Entra identities holding Monitoring Metrics Publisher, which
// the app's identity gets (APPLICATIONINSIGHTS_AUTHENTICATION_STRING names it).

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string
@description('Name of the Application Insights component.')
param applicationInsightsName string
param location string
param tags object
@minValue(30)
@maxValue(730)
@description('Days the workspace keeps logs (traces, audit events, queue writes).')
param retentionInDays int = 90

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

output logAnalyticsWorkspaceId string = workspace.id
output applicationInsightsId string = applicationInsights.id
output applicationInsightsName string = applicationInsights.name
// The connection string itself (not the component's name): the host needs its ingestion endpoint.
output applicationInsightsConnectionString string = applicationInsights.properties.ConnectionString
