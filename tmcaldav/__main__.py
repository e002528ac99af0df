"""`python -m tmcaldav`: the same CLI as the `tmcaldav` console script."""

from tmcaldav.cli import main

main()
