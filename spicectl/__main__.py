from spicectl.entry import main

if __name__ == "__main__":  # guarded: multiprocessing's spawn re-imports this module
    main()
