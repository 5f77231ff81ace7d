"""The redirector: `https://<tracking domain>/t/<token>` → spooled click event → 302."""
