"""``python -m phasediag`` = the ``phasediag`` console script."""

from phasediag.cli import main

if __name__ == "__main__":
    main()
