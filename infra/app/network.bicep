// The private network the Function App's outbound traffic runs through (Flex Consumption routes
// all of it through the integrated subnet), and the private DNS zones that make the data-plane
// host names resolve to the private endpoints inside it.

@description('Name of the virtual network.')
param vnetName string
@description('Name of the network security group on both subnets.')
param nsgName string
param location string
param tags object
@description('Address space of the virtual network.')
param addressPrefix string = '10.60.0.0/16'
@description('Subnet delegated to Flex Consumption (Microsoft.App/environments) for VNet integration.')
param appSubnetPrefix string = '10.60.0.0/24'
@description('Subnet holding the private endpoints of Storage, Key Vault and SQL.')
param privateEndpointSubnetPrefix string = '10.60.1.0/24'

// No custom rules: the defaults allow traffic inside the virtual network and outbound, and
// deny inbound from the internet (the site's own inbound traffic never enters this network).
resource nsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: nsgName
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

// privatelink zones per cloud: derived from environment() so sovereign clouds get theirs.
var dnsZoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  vault: 'privatelink${replace(environment().suffixes.keyvaultDns, 'vault', 'vaultcore')}'
  sql: 'privatelink${environment().suffixes.sqlServerHostname}'
}

resource blobZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: dnsZoneNames.blob
  location: 'global'
  tags: tags
}

resource queueZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: dnsZoneNames.queue
  location: 'global'
  tags: tags
}

resource vaultZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: dnsZoneNames.vault
  location: 'global'
  tags: tags
}

resource sqlZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: dnsZoneNames.sql
  location: 'global'
  tags: tags
}

resource blobZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: blobZone
  name: vnetName
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource queueZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: queueZone
  name: vnetName
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource vaultZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: vaultZone
  name: vnetName
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource sqlZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: sqlZone
  name: vnetName
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

output appSubnetId string = '${vnet.id}/subnets/app'
output privateEndpointSubnetId string = '${vnet.id}/subnets/private-endpoints'
output blobDnsZoneId string = blobZone.id
output queueDnsZoneId string = queueZone.id
output vaultDnsZoneId string = vaultZone.id
output sqlDnsZoneId string = sqlZone.id
