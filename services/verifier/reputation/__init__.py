"""The reputation watch (issue 14): tracking domains looked up on DNS blocklists.

- `blocklists`: pure rules, what to ask each list and what every answer means;
- `dnspython`: the adapter that asks a list zone over the wire and returns the raw answer;
- `engine`: `ReputationEngine`, the lookups as the watches use them: cached for the
  answer's TTL, SURBL/URIBL deduplicated by registered domain, a daily query budget per
  list that is never exceeded, bounded concurrency, SERVFAIL and timeouts retried and
  never a verdict.
"""
