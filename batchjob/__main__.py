"""`python -m batchjob`: the batch job's command line, as the installed `batchjob` command."""

from batchjob.cli import main

main()
