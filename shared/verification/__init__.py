"""Does a customer's DNS lead a tracking domain to the platform host? The judgement the
verifier acts on and `trackctl doctor` reports, in one place so the two cannot disagree:
the dnspython adapter (dns), the chain walk (checks) and the pure verdict (judge)."""
