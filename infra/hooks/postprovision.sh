#!/usr/bin/env bash
# azd postprovision hook: the database steps Bicep cannot do without shared-key deployment
# scripts. Runs as the DEPLOYER (the SQL server's Microsoft Entra admin), never as the app:
#   1. open the SQL server's public endpoint to this machine's address only, for this run;
#   2. create the app identity's contained database user (FROM EXTERNAL PROVIDER) and give it
#      db_datareader + db_datawriter, nothing more;
#   3. run `exactsync migrate` (the DDL), with the deployer's Entra credentials;
#   4. close the endpoint again (remove the temporary rule, restore the public-access setting),
#      also when a step fails.
# Idempotent: azd runs it after every `azd provision` / `azd up`.
#
# Prerequisites (docs/deploy.md): Azure CLI signed in as the deployer (`az login`), go-sqlcmd
# (`sqlcmd` with --authentication-method), the project installed (`./dev` creates .venv) and
# ODBC Driver 18 for SQL Server (or SQL_DRIVER pointing at libmsodbcsql-18).
#
# Inputs: the azd environment (azd exports it to hooks): AZURE_SUBSCRIPTION_ID,
# AZURE_RESOURCE_GROUP, SQL_SERVER_NAME, SQL_SERVER, SQL_DATABASE, AZURE_MANAGED_IDENTITY_NAME,
# AZURE_MANAGED_IDENTITY_PRINCIPAL_ID. Optional: SQL_CLIENT_IP (this machine's public IPv4 as
# Azure sees it; default: asked from api.ipify.org), EXACTSYNC_BIN (the exactsync command),
# SQL_CONNECT_ATTEMPTS / SQL_RETRY_SECONDS (a new firewall rule and a paused serverless database
# both take a while).
set -euo pipefail

fail() {
  echo "postprovision: $*" >&2
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# Run by hand (not by azd): load the azd environment ourselves.
if [ -z "${SQL_SERVER:-}" ] && command -v azd >/dev/null 2>&1; then
  set -a
  # shellcheck disable=SC1090
  . <(azd env get-values)
  set +a
fi

for name in AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP SQL_SERVER_NAME SQL_SERVER SQL_DATABASE \
  AZURE_MANAGED_IDENTITY_NAME AZURE_MANAGED_IDENTITY_PRINCIPAL_ID; do
  [ -n "${!name:-}" ] || fail "$name is not set: run this from azd (azd provision) or after it, in the project folder"
done

guid='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
[[ $AZURE_MANAGED_IDENTITY_PRINCIPAL_ID =~ $guid ]] ||
  fail "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not an object id: '$AZURE_MANAGED_IDENTITY_PRINCIPAL_ID'"
[[ $AZURE_MANAGED_IDENTITY_NAME =~ ^[A-Za-z0-9_-]{3,128}$ ]] ||
  fail "AZURE_MANAGED_IDENTITY_NAME is not a managed identity name: '$AZURE_MANAGED_IDENTITY_NAME'"

# --- prerequisites --------------------------------------------------------------------------
command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is required: https://aka.ms/azure-cli"
az account show --subscription "$AZURE_SUBSCRIPTION_ID" >/dev/null 2>&1 ||
  fail "the Azure CLI is not signed in to subscription $AZURE_SUBSCRIPTION_ID: run 'az login'"
command -v sqlcmd >/dev/null 2>&1 ||
  fail "sqlcmd (go-sqlcmd) is required: https://aka.ms/go-sqlcmd (winget/brew/apt: sqlcmd)"
sqlcmd --help 2>&1 | grep -q -- '--authentication-method' ||
  fail "the sqlcmd on PATH is the old ODBC one; install go-sqlcmd (https://aka.ms/go-sqlcmd)"
exactsync=${EXACTSYNC_BIN:-}
if [ -z "$exactsync" ]; then
  if [ -x "$repo/.venv/bin/exactsync" ]; then
    exactsync="$repo/.venv/bin/exactsync"
  elif command -v exactsync >/dev/null 2>&1; then
    exactsync=$(command -v exactsync)
  else
    fail "the exactsync command is missing: run ./dev once (creates .venv) or pip install -e ."
  fi
fi

ip=${SQL_CLIENT_IP:-}
if [ -z "$ip" ]; then
  ip=$(curl -fsS --max-time 10 https://api.ipify.org) ||
    fail "could not learn this machine's public IP; set SQL_CLIENT_IP"
fi
[[ $ip =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || fail "SQL_CLIENT_IP is not an IPv4 address: '$ip'"

az_sql() { az "$@" --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" --only-show-errors; }

# --- open the door for this run only -------------------------------------------------------
rule="azd-postprovision-$(date -u +%Y%m%d%H%M%S)"
access=$(az_sql sql server show --name "$SQL_SERVER_NAME" --query publicNetworkAccess --output tsv)
opened_access=no
rule_created=no

close() {
  status=$?
  set +e
  if [ "$rule_created" = yes ]; then
    az_sql sql server firewall-rule delete --server "$SQL_SERVER_NAME" --name "$rule" >/dev/null ||
      echo "postprovision: could not delete firewall rule $rule on $SQL_SERVER_NAME: delete it by hand" >&2
  fi
  if [ "$opened_access" = yes ]; then
    az_sql sql server update --name "$SQL_SERVER_NAME" --enable-public-network false >/dev/null ||
      echo "postprovision: could not disable public network access on $SQL_SERVER_NAME: disable it by hand" >&2
  fi
  exit "$status"
}
trap close EXIT

if [ "$access" != "Enabled" ]; then
  echo "postprovision: enabling public network access on $SQL_SERVER_NAME for this run"
  opened_access=yes # set first: a half-applied update is still undone on exit
  az_sql sql server update --name "$SQL_SERVER_NAME" --enable-public-network true >/dev/null
fi
echo "postprovision: firewall rule $rule admits $ip for this run"
az_sql sql server firewall-rule create --server "$SQL_SERVER_NAME" --name "$rule" \
  --start-ip-address "$ip" --end-ip-address "$ip" >/dev/null
rule_created=yes

# --- the app identity's database user ------------------------------------------------------
user=${AZURE_MANAGED_IDENTITY_NAME}
grant_sql="IF DATABASE_PRINCIPAL_ID(N'$user') IS NULL CREATE USER [$user] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '$AZURE_MANAGED_IDENTITY_PRINCIPAL_ID';
ALTER ROLE db_datareader ADD MEMBER [$user];
ALTER ROLE db_datawriter ADD MEMBER [$user];"

attempts=${SQL_CONNECT_ATTEMPTS:-12}
pause=${SQL_RETRY_SECONDS:-10}
run_sql() {
  local n=1
  until sqlcmd -S "$SQL_SERVER" -d "$SQL_DATABASE" --authentication-method ActiveDirectoryDefault \
    -l 30 -b -Q "$1"; do
    [ "$n" -lt "$attempts" ] || return 1
    echo "postprovision: SQL not reachable yet (attempt $n of $attempts; new firewall rule or paused database), retrying in ${pause}s" >&2
    n=$((n + 1))
    sleep "$pause"
  done
}

echo "postprovision: database user [$user] with db_datareader, db_datawriter on $SQL_DATABASE"
run_sql "$grant_sql" || fail "could not create the database user for $user on $SQL_SERVER/$SQL_DATABASE"

# --- schema ---------------------------------------------------------------------------------
echo "postprovision: exactsync migrate on $SQL_SERVER/$SQL_DATABASE"
# As the deployer: without AZURE_CLIENT_ID the warehouse uses DefaultAzureCredential (az login),
# not the app's managed identity (which does not exist on this machine and may not run DDL).
env -u AZURE_CLIENT_ID SQL_SERVER="$SQL_SERVER" SQL_DATABASE="$SQL_DATABASE" "$exactsync" migrate ||
  fail "exactsync migrate failed; fix the cause and run: azd hooks run postprovision"
echo "postprovision: done"
