"""``meshkit ...`` subcommands; the only place the command line is parsed."""
