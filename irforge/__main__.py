from irforge.cli import main

main()
