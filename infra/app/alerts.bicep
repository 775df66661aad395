// Alert rules: a person must act when a token chain dies (only a new consent helps) and when
// load steps end in the poison queue. Both notify one action group (e-mail, if given).

@description('Name of the action group.')
param actionGroupName string
@description('Prefix of the alert rule names.')
param alertNamePrefix string
param location string
param tags object
@description('E-mail address notified; empty: the action group has no receiver.')
param alertEmail string
@description('Application Insights component the app logs to.')
param applicationInsightsId string
@description('Log Analytics workspace receiving the storage queue write logs.')
param logAnalyticsWorkspaceId string
@description('Name of the poison queue the Functions host moves failed load steps to.')
param poisonQueueName string

// The stable event name the OAuth code logs at ERROR when a chain needs a new consent
// (invalid_grant, "Old refresh token used", an in-doubt refresh settled as lost).
var needsReauthEvent = 'exactsync.connection_needs_reauth'

// traces.severityLevel: 3 = Error, 4 = Critical (Python logging.ERROR / CRITICAL).
var needsReauthQuery = 'traces | where severityLevel >= 3 | where message contains "${needsReauthEvent}" or tostring(customDimensions.event) == "${needsReauthEvent}"'

// There is no per-queue depth metric (QueueMessageCount is per account), so the rule counts
// arrivals instead: the host moves a message to the poison queue with a PutMessage, which the
// queue service's StorageWrite log records.
var poisonQueueQuery = 'StorageQueueLogs | where OperationName == "PutMessage" | where Uri contains "/${poisonQueueName}/messages"'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'exactsync'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource needsReauthAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${alertNamePrefix}-needs-reauth'
  location: location
  tags: tags
  properties: {
    displayName: 'exactsync: a connection needs a new consent'
    description: 'A token chain is dead (${needsReauthEvent}). Find the connection in the trace, then open /api/oauth/start?code=<function key>&connection=<name> and consent again. Syncs of that connection stop until then.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: needsReauthQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource poisonQueueAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${alertNamePrefix}-poison-queue'
  location: location
  tags: tags
  properties: {
    displayName: 'exactsync: load steps reached ${poisonQueueName}'
    description: 'Load steps were moved to ${poisonQueueName}: they failed maxDequeueCount times (host.json) or were rejected as invalid. Read the failed-steps table and the traces, fix the cause, then request a sync again (POST /api/sync).'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: poisonQueueQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // The table appears in the workspace with its first queue write; do not reject the rule
    // before then.
    skipQueryValidation: true
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupId string = actionGroup.id
