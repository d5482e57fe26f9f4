from spicectl.cli.main import main

main()
