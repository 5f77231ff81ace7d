"""The verifier: `domain.created` → does the customer's DNS lead to the platform host?

Validates the name, then checks the CNAME chain (or, for CNAME flattening, the
address set) and the CAA records with dnspython's async resolver. A domain that
is not right yet is rechecked with growing delays (delayed messages) until a
deadline; one that is right becomes `verified` and `domain.verified` is published.
Verified and active domains are re-checked on a schedule and lapse when their DNS
moves away.
"""
