"""Identity, access control, PII barrier, recall authority and limits (see policy/README in docs)."""
