"""The certifier: `domain.verified` → an ACME certificate via certbot, served by nginx, renewed."""
