"""`python -m toxiserve`: the operator's command line, as the installed `toxiserve` command."""

from toxiserve.cli import main

main()
