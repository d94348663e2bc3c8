"""What runs in a trial: per kind, the argv and the parser of its output (`adapters`), and the
kinds the host takes part in, dirty logging and live migration (`dirty`)."""
