"""The contract: what crosses process boundaries -- events, commands, the authorization call,
CDR legs (and the fold that defines them from events), the ledger wire form.  Wire types only."""
