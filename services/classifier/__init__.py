"""The classifier: what several clicks show (bursts, honeypots), published as click.classified."""
