"""trackctl: the operator's command line (database, links, running the pipeline)."""
