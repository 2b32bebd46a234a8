"""`python -m robusthyper`: the same as the `robusthyper` command (entry point `robusthyper.cli:main`)."""

from robusthyper.cli import main

if __name__ == "__main__":
    main()
