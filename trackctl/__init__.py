"""trackctl: the operator's command line (database, links, domains, dead letters, clicks,
doctor, running the pipeline). docs/trackctl.md documents every command."""
