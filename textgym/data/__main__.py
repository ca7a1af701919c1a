from textgym.data import main

main()
