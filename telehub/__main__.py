from telehub.cli import main

main()
