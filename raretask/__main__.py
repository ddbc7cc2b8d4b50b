from raretask.cli import main

main()
