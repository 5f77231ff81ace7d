"""The certifier: `domain.verified` → an ACME certificate via certbot, kept in the
certificate store (which the edge agents serve from), renewed."""
