"""The exchange agents: validate, risk, match, settle, publish."""
