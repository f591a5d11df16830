"""The subcommands of the nasdsl command line, one module each."""
