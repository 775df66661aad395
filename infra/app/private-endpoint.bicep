// A private endpoint for one sub-resource (blob, queue, vault, sqlServer) and its DNS record in
// the matching privatelink zone.

@description('Name of the private endpoint.')
param name string
param location string
param tags object
@description('Subnet the endpoint\'s network interface lives in.')
param subnetId string
@description('Resource the endpoint connects to.')
param targetResourceId string
@description('Private link sub-resource: blob, queue, vault or sqlServer.')
param groupId string
@description('Private DNS zone that gets the endpoint\'s A record.')
param privateDnsZoneId string

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetResourceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

output id string = endpoint.id
