-- Run once by the postgres image, on an empty volume, as POSTGRES_USER (sipledger):
-- POSTGRES_DB made the database "sipledger" (location, provisioning, live calls);
-- the ledger gets one of its own, so its tables and backups stay apart.
CREATE DATABASE billing OWNER sipledger;
