from robusthyper.cli import main

main()
