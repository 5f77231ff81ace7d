"""Code the tracking-domains services share: settings, logs, events, broker, database, links."""
